package epoll

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/network"
	"go.uber.org/goleak"
)

// echoHandler answers every read with the same bytes and records closes.
type echoHandler struct {
	c      *network.Conn
	mu     sync.Mutex
	closed chan error
	take   func(n int) int
}

func (h *echoHandler) OnRead(d []byte) int {
	n := len(d)
	if h.take != nil {
		n = h.take(n)
	}
	h.c.Write(d[:n])
	return n
}
func (h *echoHandler) OnEOF()            { h.c.Close() }
func (h *echoHandler) OnClose(err error) { h.closed <- err }

type server struct {
	acc      network.Acceptor
	handlers chan *echoHandler
	take     func(int) int
}

func startServer(t *testing.T, m *Model, take ...func(int) int) *server {
	s := &server{handlers: make(chan *echoHandler, 64)}
	if len(take) > 0 {
		s.take = take[0]
	}
	acc, err := m.Listen(context.Background(), "127.0.0.1:0", func(c *network.Conn) {
		h := &echoHandler{c: c, closed: make(chan error, 1), take: s.take}
		c.SetHandler(h)
		m.Start(c)
		s.handlers <- h
	})
	if err != nil {
		t.Fatal(err)
	}
	s.acc = acc
	t.Cleanup(func() { acc.Close() })
	return s
}

// connect dials s and returns the client side and the server's handler;
// the client closes with the test.
func connect(t *testing.T, s *server) (net.Conn, *echoHandler) {
	client, err := net.Dial("tcp", s.acc.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, <-s.handlers
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func wait(t *testing.T, what string, cond func() bool) {
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIdleHoldsNoBufferAndCloseLeavesNothing: after a request and its
// answer, an idle connection holds no read buffer and no goroutine; once
// closed it leaves no descriptor and no goroutine behind.
func TestIdleHoldsNoBufferAndCloseLeavesNothing(t *testing.T) {
	m := &Model{}
	s := startServer(t, m)
	ignore := goleak.IgnoreCurrent() // reactors and the listener
	fds := openFDs(t)
	bufs := bufpool.Outstanding()

	client, err := net.Dial("tcp", s.acc.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := <-s.handlers
	client.Write([]byte("hello"))
	got := make([]byte, 5)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "hello" {
		t.Fatalf("echo %q %v", got, err)
	}
	c := h.c.Socket().(*fdSocket).c
	var holds bool
	wait(t, "the reader to park", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.reading || !c.wantIn {
			return false
		}
		holds = c.buf != nil // the reader's, but it has parked
		return true
	})
	if holds || bufpool.Outstanding() != bufs {
		t.Fatalf("idle connection holds a buffer (outstanding %d, was %d)", bufpool.Outstanding(), bufs)
	}
	if m.Connections() != 1 {
		t.Fatalf("%d connections registered", m.Connections())
	}

	client.Close()
	if err := <-h.closed; err != nil {
		t.Fatalf("close cause %v", err)
	}
	wait(t, "descriptors to be released", func() bool { return openFDs(t) <= fds && m.Connections() == 0 })
	// Reader goroutines are long-lived (8 per core at most); nothing else.
	goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("sync.runtime_notifyListWait"))
}

// TestPartialDataKeepsBufferUntilConsumed: unconsumed bytes stay buffered
// across readiness events and are offered again with the next bytes.
func TestPartialDataKeepsBufferUntilConsumed(t *testing.T) {
	m := &Model{}
	s := startServer(t, m, func(n int) int { return n - n%4 }) // whole 4-byte records only
	client, err := net.Dial("tcp", s.acc.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	<-s.handlers
	client.Write([]byte("abcdef"))
	got := make([]byte, 4)
	io.ReadFull(client, got)
	client.Write([]byte("gh"))
	io.ReadFull(client, got)
	if string(got) != "efgh" {
		t.Fatalf("second record %q", got)
	}
}

// TestWriteBackpressure: a large write to a client that does not read
// blocks in EPOLLOUT and completes once the client reads.
func TestWriteBackpressure(t *testing.T) {
	client, h := connect(t, startServer(t, &Model{}))
	big := make([]byte, 8<<20)
	done := make(chan error, 1)
	go func() { _, err := h.c.Write(big); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("8 MiB write finished with nobody reading: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	n, err := io.ReadFull(client, make([]byte, len(big)))
	if err != nil || n != len(big) {
		t.Fatalf("read %d: %v", n, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPauseAndResume(t *testing.T) {
	client, h := connect(t, startServer(t, &Model{}))
	h.c.PauseRead()
	client.Write([]byte("ping"))
	client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := client.Read(make([]byte, 4)); n != 0 {
		t.Fatal("delivered while paused")
	}
	h.c.ResumeRead()
	client.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "ping" {
		t.Fatalf("after resume: %q %v", got, err)
	}
}

// TestCloseBeforeStart: a connection refused before it started (no filter
// chain matched) closes without a handler and leaves no descriptor; one
// closed between its handler and Start reports the close once.
func TestCloseBeforeStart(t *testing.T) {
	m := &Model{}
	closed := make(chan error, 1)
	var n int
	var mu sync.Mutex
	acc, err := m.Listen(context.Background(), "127.0.0.1:0", func(c *network.Conn) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		if k == 1 {
			c.Close() // refused: never started, no handler
			return
		}
		h := &echoHandler{c: c, closed: closed}
		c.SetHandler(h)
		c.Close() // closed by a filter before Start
		m.Start(c)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	fds := openFDs(t)
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", acc.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read data from a refused connection")
		}
		c.Close()
	}
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the started connection never reported its close")
	}
	wait(t, "descriptors released", func() bool { return openFDs(t) <= fds && m.Connections() == 0 })
}

// TestAcceptBatch: with a batch of n, one readiness accepts at most n
// connections of the backlog; the rest wait for the next readiness, and
// a batch of 0 takes the backlog to EAGAIN.
func TestAcceptBatch(t *testing.T) {
	m := &Model{}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	fd, addr, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var got int
	// Not registered with a reactor: the test is the only one to accept.
	a := &acceptor{m: m, r: m.pick(), fd: fd, addr: addr, ctx: context.Background(),
		accept: func(c *network.Conn) { got++; c.Close() }}
	defer a.Close()
	dial := func(n int) {
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
	}
	dial(5)
	a.SetAcceptBatch(2)
	// Connections reach the backlog as their handshakes end: take them
	// as they come, never more than 2 a readiness.
	total, full := 0, false
	for deadline := time.Now().Add(3 * time.Second); total < 5 && time.Now().Before(deadline); {
		got = 0
		a.acceptAll()
		if got > 2 {
			t.Fatalf("one readiness accepted %d connections, bound 2", got)
		}
		full = full || got == 2
		total += got
		if got == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if total != 5 || !full {
		t.Fatalf("accepted %d of 5 (a full batch seen: %v)", total, full)
	}
	dial(3)
	time.Sleep(50 * time.Millisecond) // the three handshakes are done
	a.SetAcceptBatch(0)
	got = 0
	a.acceptAll()
	if got != 3 {
		t.Fatalf("an unbounded readiness accepted %d of 3", got)
	}
}
