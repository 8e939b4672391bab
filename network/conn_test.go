package network

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// recorder consumes everything and records what it saw.
type recorder struct {
	mu     sync.Mutex
	data   []byte
	eof    chan struct{}
	closed chan error
	take   func(n int) int // how much of n bytes to consume
}

func newRecorder() *recorder {
	return &recorder{eof: make(chan struct{}, 1), closed: make(chan error, 1), take: func(n int) int { return n }}
}

func (r *recorder) OnRead(d []byte) int {
	n := r.take(len(d))
	r.mu.Lock()
	r.data = append(r.data, d[:n]...)
	r.mu.Unlock()
	return n
}
func (r *recorder) OnEOF()            { r.eof <- struct{}{} }
func (r *recorder) OnClose(err error) { r.closed <- err }
func (r *recorder) got() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.data)
}

func pair(t *testing.T) (*Conn, net.Conn, *recorder) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(context.Background(), raw.(*net.TCPConn))
	r := newRecorder()
	c.SetHandler(r)
	return c, client, r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPauseHoldsBytesAndResumeRedelivers(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, client, r := pair(t)
	c.PauseRead()
	Netpoll.Start(c)
	client.Write([]byte("hello"))
	time.Sleep(20 * time.Millisecond)
	if r.got() != "" {
		t.Fatalf("delivered %q while paused", r.got())
	}
	c.ResumeRead()
	waitFor(t, "delivery after resume", func() bool { return r.got() == "hello" })
	client.Close()
	<-r.eof
	c.Close()
	if err := <-r.closed; err != nil {
		t.Fatalf("close cause %v", err)
	}
}

func TestUnconsumedBytesAreOfferedAgain(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, client, r := pair(t)
	// Consume only whole 4-byte records.
	r.take = func(n int) int { return n - n%4 }
	Netpoll.Start(c)
	client.Write([]byte("abcdef"))
	waitFor(t, "first record", func() bool { return r.got() == "abcd" })
	client.Write([]byte("gh"))
	waitFor(t, "second record", func() bool { return r.got() == "abcdefgh" })
	c.Close()
	<-r.closed
	client.Close()
}

func TestBufferLimitCloses(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, client, r := pair(t)
	c.BufferLimit = 32 << 10
	r.take = func(int) int { return 0 } // never consumes: a head that never ends
	Netpoll.Start(c)
	go client.Write(make([]byte, 64<<10))
	if err := <-r.closed; err != ErrBufferLimit {
		t.Fatalf("close cause %v, want ErrBufferLimit", err)
	}
	client.Close()
}
