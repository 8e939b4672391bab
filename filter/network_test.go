package filter

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/network"
)

// The read filter contract's engine (readHandler) on a real loopback
// connection under netpoll.

type sink struct {
	mu     sync.Mutex
	data   []byte
	closed chan struct{}
}

func (s *sink) OnRead(d []byte) int {
	s.mu.Lock()
	s.data = append(s.data, d...)
	s.mu.Unlock()
	return len(d)
}
func (s *sink) OnEOF()        {}
func (s *sink) OnClose(error) { close(s.closed) }
func (s *sink) got() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.data)
}

// funcFilter is a read filter made of a function.
type funcFilter func(cb ConnCallbacks, data []byte) (int, Status)

func (funcFilter) OnNewConnection(ConnCallbacks) Status { return Continue }
func (f funcFilter) OnData(cb ConnCallbacks, data []byte, end bool) (int, Status) {
	if end {
		return 0, Continue
	}
	return f(cb, data)
}

type funcFactory struct{ f ReadFilter }

func (f funcFactory) NewReadFilter(*network.Conn) (ReadFilter, error) { return f.f, nil }

// start runs f in front of a sink on a new loopback connection.
func start(t *testing.T, f ReadFilter) (net.Conn, *sink, *network.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := network.NewConn(context.Background(), raw.(*net.TCPConn))
	s := &sink{closed: make(chan struct{})}
	h, err := ReadFilterFactory(funcFactory{f}).NewHandler(c, s)
	if err != nil {
		t.Fatal(err)
	}
	c.SetHandler(h)
	network.Start(h)
	network.Netpoll.Start(c)
	t.Cleanup(func() { c.Close() })
	return client, s, c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestContinueBeforeStop: a Continue that comes before the Stop it
// answers does not stall the connection: the bytes go on without more
// input from the client.
func TestContinueBeforeStop(t *testing.T) {
	first := true
	client, s, _ := start(t, funcFilter(func(cb ConnCallbacks, data []byte) (int, Status) {
		if first {
			first = false
			cb.Continuation().Continue() // the timer fired at once
			return 0, Stop
		}
		return len(data), Continue
	}))
	io.WriteString(client, "hello")
	eventually(t, "the bytes to go on", func() bool { return s.got() == "hello" })
}

// TestPartialHoldResume: a filter that lets part through and holds the
// rest gets the rest again on resume; every byte reaches the next
// handler once, in order.
func TestPartialHoldResume(t *testing.T) {
	var mu sync.Mutex
	seen := 0
	client, s, _ := start(t, funcFilter(func(cb ConnCallbacks, data []byte) (int, Status) {
		mu.Lock()
		defer mu.Unlock()
		seen++
		k := cb.Continuation()
		time.AfterFunc(5*time.Millisecond, k.Continue)
		return min(3, len(data)), Stop // three bytes at a time
	}))
	io.WriteString(client, "abcdefghijklmnopqrstuvwxyz")
	eventually(t, "all bytes", func() bool { return s.got() == "abcdefghijklmnopqrstuvwxyz" })
	mu.Lock()
	defer mu.Unlock()
	if seen < 9 {
		t.Fatalf("OnData ran %d times for 26 bytes three at a time", seen)
	}
}

// TestCloseFromOnData: a Close from OnData takes effect after the bytes
// it let through went on; the peer sees a FIN (EOF), not a reset.
func TestCloseFromOnData(t *testing.T) {
	client, s, _ := start(t, funcFilter(func(cb ConnCallbacks, data []byte) (int, Status) {
		cb.Close(false)
		return min(4, len(data)), Stop
	}))
	io.WriteString(client, "keep-drop")
	eventually(t, "the close", func() bool {
		select {
		case <-s.closed:
			return true
		default:
			return false
		}
	})
	if got := s.got(); got != "keep" {
		t.Fatalf("next handler got %q, want the 4 bytes let through", got)
	}
	client.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read %d, %v; want EOF", n, err)
	}
}
