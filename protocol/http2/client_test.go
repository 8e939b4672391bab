package http2

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
)

// TestStreamNeverOpenedFailsWhole: a stream reserved before the server's
// GOAWAY cannot send its headers; its reads must fail at once rather than
// wait for an answer that cannot come (a regression: the proxy waited for
// the route timeout instead of retrying on a fresh connection).
func TestStreamNeverOpenedFailsWhole(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	goaway := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		go io.Copy(io.Discard, c)
		fr := http2.NewFramer(c, nil)
		fr.WriteSettings()
		<-goaway
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		time.Sleep(2 * time.Second)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	mc := newMux(nc, protocol.MuxOptions{})
	defer mc.Close()
	cs, err := mc.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	close(goaway)
	deadline := time.Now().Add(2 * time.Second)
	for mc.Usable() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	var h protocol.Headers
	h.Set(protocol.Method, "GET")
	h.Set(protocol.Path, "/")
	h.Set(protocol.Authority, "x")
	if err := cs.WriteHeaders(&h, true); err == nil {
		t.Fatal("headers sent on a connection that is going away")
	}
	done := make(chan error, 1)
	go func() { done <- cs.ReadHeaders(&h) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ReadHeaders succeeded on a stream never opened")
		}
	case <-time.After(time.Second):
		t.Fatal("ReadHeaders waits on a stream that was never opened")
	}
	cs.Close()
}
