package test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"go.uber.org/goleak"
)

// TestNoGoroutineLeft runs traffic through a server (keep-alive, pooled
// upstream connections, a TCP session, a malformed request) and shuts it
// down: no goroutine of the proxy may remain.
func TestNoGoroutineLeft(t *testing.T) {
	up := testutil.StartUpstream(t)
	echo := testutil.StartEcho(t)
	ignore := goleak.IgnoreCurrent()
	srv, err := buildServer(httpBootstrap(up.Addr, routeCfg{}, ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, srv: srv}
	for i := 0; i < 5; i++ {
		get(t, p.url("ingress")+"/x")
	}
	rawExchange(t, p.addr("ingress"), "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
	idle, err := net.Dial("tcp", p.addr("ingress")) // an idle client connection
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	srv.Shutdown(ctx)
	cancel()

	tcp := startProxy(t, tcpBootstrap(echo))
	c, err := net.Dial("tcp", tcp.addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.Read(make([]byte, 4))
	c.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	tcp.srv.Shutdown(ctx)
	cancel()

	// http.Get's idle client connections belong to the test, not the proxy.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
}
