package network

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Ending a connection: a close, a lingering close (a FIN, then the
// peer's input drained), a reset.

// Reset closes the connection with a TCP RST (SO_LINGER 0) instead of a
// FIN where the socket allows it, dropping unsent bytes. A transport
// socket (TLS) is not closed politely first: the peer sees the reset.
func (c *Conn) Reset() error {
	c.resetting.Store(true)
	return c.Close()
}

// WillReset makes the connection's close, whenever and by whomever it
// comes, a reset (a filter asked for one that waits for written bytes
// to leave: a handler that closes meanwhile must not send a FIN).
func (c *Conn) WillReset() { c.resetting.Store(true) }

// abort makes the socket's close a reset (closeOnce held).
func (c *Conn) abort() {
	if l, ok := c.base.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	if c.base != c.raw {
		c.base.Close() // not tls.Conn.Close: no close_notify
	}
}

// ResetAfterFlush waits, at most max, until the kernel sent everything
// written (the socket's send queue is empty), then resets; reading is
// paused meanwhile. It blocks: call it on a goroutine of its own.
func (c *Conn) ResetAfterFlush(max time.Duration) {
	c.WillReset()
	c.PauseReadFor(PauseFilter)
	// After a write under way (a write filter that asked for the reset).
	c.wmu.Lock()
	c.wmu.Unlock()
	end := time.Now().Add(max)
	for !c.closed.Load() && time.Now().Before(end) {
		if n, ok := unsent(c.base); !ok || n == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.Reset()
}

// unsent is the bytes a socket's kernel send queue still holds.
func unsent(s Socket) (int, bool) {
	if u, ok := s.(interface{ Unsent() (int, error) }); ok {
		n, err := u.Unsent()
		return n, err == nil
	}
	sc, ok := s.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	n, ierr := 0, error(nil)
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ierr != nil {
		return 0, false
	}
	return n, true
}

// Close closes the socket. The handler's OnClose follows, once.
func (c *Conn) Close() error { return c.closeWith(nil) }

// LingerClose closes the write side now (the answer is followed by a
// FIN) and the connection when the peer closes its side, sends nothing
// for LingerIdle, or d passes. Meanwhile reading goes on and the handler
// drops what comes: a close with unread input makes the kernel answer
// the peer's next bytes with a reset, and a client that sends its whole
// request before it reads would never see the answer (nginx's lingering
// close, with its lingering_timeout and lingering_time).
func (c *Conn) LingerClose(d time.Duration) {
	if c.closed.Load() {
		return
	}
	if c.CloseWrite() != nil || d <= 0 {
		c.Close()
		return
	}
	c.ResumeRead()
	c.lingerTick(time.Now().Add(d), c.rx.Load())
}

// lingerTick checks a lingering close every LingerIdle.
func (c *Conn) lingerTick(end time.Time, last uint64) {
	time.AfterFunc(LingerIdle, func() {
		rx := c.rx.Load()
		if rx == last || !time.Now().Before(end) || c.closed.Load() {
			c.Close()
			return
		}
		c.lingerTick(end, rx)
	})
}

// LingerIdle ends a lingering close when the peer sends nothing for it.
var LingerIdle = 250 * time.Millisecond

func (c *Conn) closeWith(err error) error {
	var cerr error
	c.closeOnce.Do(func() {
		c.closeErr = err
		c.mu.Lock()
		c.closed.Store(true)
		if c.done != nil {
			close(c.done)
		}
		c.mu.Unlock()
		if c.resetting.Load() {
			c.abort()
		}
		cerr = c.raw.Close()
		if c.wake != nil {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	})
	return cerr
}

// Closed reports whether Close has been called.
func (c *Conn) Closed() bool { return c.closed.Load() }
