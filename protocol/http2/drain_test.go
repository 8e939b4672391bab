package http2

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol"
)

// slowConn takes each write after delay, or never (stuck) until closed.
type slowConn struct {
	testutil.FakeConn
	delay   atomic.Int64 // nanoseconds
	stuck   atomic.Bool
	mu      sync.Mutex
	written int
	closed  chan struct{}
	once    sync.Once
}

func (c *slowConn) Write(p []byte) (int, error) {
	if c.stuck.Load() {
		<-c.closed
		return 0, net.ErrClosed
	}
	select {
	case <-time.After(time.Duration(c.delay.Load())):
	case <-c.closed:
		return 0, net.ErrClosed
	}
	c.mu.Lock()
	c.written += len(p)
	c.mu.Unlock()
	return len(p), nil
}

func (c *slowConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// TestDrainWaitsForSlowReader: a drained connection whose last answer is
// still going out to a slow reader stays open while the writes progress,
// and is closed soon when they stop.
func TestDrainWaitsForSlowReader(t *testing.T) {
	old := drainCloseWait
	drainCloseWait = 60 * time.Millisecond
	defer func() { drainCloseWait = old }()
	for _, stuck := range []bool{false, true} {
		c := &slowConn{closed: make(chan struct{})}
		c.delay.Store(int64(time.Millisecond))
		sc := newServer(c, protocol.ServerOptions{}, &answerer{}).(*serverConn)
		time.Sleep(20 * time.Millisecond) // the server's SETTINGS go out
		c.delay.Store(int64(25 * time.Millisecond))
		c.stuck.Store(stuck)
		sc.mu.Lock()
		queued := len(sc.ob.b) + 1<<20 // 16 writes of 64 KiB at 25 ms: 400 ms, past several drainCloseWaits
		sc.ob.b = append(sc.ob.b, make([]byte, 1<<20)...)
		sc.mu.Unlock()
		start := time.Now()
		sc.Drain()
		select {
		case <-c.closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("stuck=%v: drained connection never closed", stuck)
		}
		took := time.Since(start)
		c.mu.Lock()
		written := c.written
		c.mu.Unlock()
		if !stuck && written < queued {
			t.Fatalf("slow reader: closed after %v with %d of %d bytes written", took, written, queued)
		}
		if stuck && took > time.Second {
			t.Fatalf("stuck reader: closed only after %v", took)
		}
	}
}
