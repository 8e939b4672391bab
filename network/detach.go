package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Connection migration (hot restart): a connection's socket moves to the
// next process, which serves it on, and the client sees nothing.
//
// Detach stops the reader where it stands, between two deliveries: the
// bytes the kernel still holds stay there and travel with the socket;
// the bytes read and not consumed are handed over as Pending. Then
// either Commit (the next process has the socket: this process lets go
// of it without a FIN or a reset, and the handler hears OnClose(
// ErrMigrated)) or Abort (reading goes on here as before).

// PauseDetach is a Detach holding the reader.
const PauseDetach PauseReason = 1 << 7

// ErrMigrated is the cause a migrated connection's handler hears.
var ErrMigrated = errors.New("network: the connection moved to the next process")

// ErrNotDetachable says a connection cannot be detached (TLS, closed,
// half-closed, or not a socket that can be duplicated).
var ErrNotDetachable = errors.New("network: the connection cannot move")

// Detached is a connection whose reader is held for a migration.
type Detached struct {
	c *Conn
	// File is a duplicate of the socket: send it, then close it.
	File *os.File
	// Pending are the bytes read and not consumed (a copy).
	Pending []byte
	ack     chan bool
}

// DetachRequest is a Detach waiting for the connection's reader, which
// calls HandOver.
type DetachRequest struct {
	got chan handOver
}

type handOver struct {
	pending []byte
	ack     chan bool
}

// HandOver is the reader's side of a Detach, called while reading is
// paused: it gives away a copy of the unconsumed bytes and waits for
// Commit or Abort. It reports whether the connection was committed: the
// reader then finishes (the handler hears OnClose(ErrMigrated)) and
// must not shut the socket down.
func (d *DetachRequest) HandOver(unconsumed []byte) bool {
	ack := make(chan bool, 1)
	d.got <- handOver{pending: append([]byte(nil), unconsumed...), ack: ack}
	return <-ack
}

// TakeDetach is the reader's check while reading is paused: the Detach
// waiting for it, or nil.
func (c *Conn) TakeDetach() *DetachRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.detach
	c.detach = nil
	return d
}

// Detachable reports whether Detach may succeed: a plaintext socket,
// no write filters, open.
func (c *Conn) Detachable() bool {
	return !c.secure && c.tr == nil && c.wf == nil && !c.closed.Load()
}

// Detach holds the reader, at most wait, and duplicates the socket. The
// caller ends with Commit or Abort. Writes are the caller's to stop.
// When it fails, undo (if not nil) runs before reading resumes (the
// handler takes its bytes again). While it is under way a close here
// does not shut the socket down: another process may have it.
func (c *Conn) Detach(wait time.Duration, undo func()) (*Detached, error) {
	if !c.Detachable() {
		return nil, ErrNotDetachable
	}
	d := &DetachRequest{got: make(chan handOver, 1)}
	c.mu.Lock()
	if c.closed.Load() || c.detach != nil || c.paused&PauseDetach != 0 {
		c.mu.Unlock()
		return nil, ErrNotDetachable
	}
	c.detach = d
	c.paused |= PauseDetach
	c.detaching.Store(true)
	c.mu.Unlock()
	c.setMigrating(true)
	fail := func() {
		c.setMigrating(false)
		c.detaching.Store(false)
		if undo != nil {
			undo()
		}
		c.ResumeReadFor(PauseDetach)
	}
	c.wakeReader()
	var req handOver
	select {
	case req = <-d.got:
	case <-time.After(wait):
		c.mu.Lock()
		taken := c.detach == nil
		c.detach = nil
		c.mu.Unlock()
		if !taken {
			fail()
			return nil, fmt.Errorf("%w: its reader did not stop within %v", ErrNotDetachable, wait)
		}
		req = <-d.got // the reader took it just now
	}
	f, err := DupSocket(c.base)
	if err != nil {
		req.ack <- false
		fail()
		return nil, fmt.Errorf("%w: %v", ErrNotDetachable, err)
	}
	return &Detached{c: c, File: f, Pending: req.pending, ack: req.ack}, nil
}

// wakeReader gets the reader to look at its state now: under epoll a
// reader starts; under netpoll a read under way is cut short.
func (c *Conn) wakeReader() {
	if c.onResume != nil {
		c.onResume()
		return
	}
	if c.wake != nil {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	if dl, ok := c.raw.(interface{ SetReadDeadline(time.Time) error }); ok {
		c.kickMu.Lock()
		c.interrupted.Store(true)
		dl.SetReadDeadline(time.Unix(1, 0))
		c.kickMu.Unlock()
	}
}

// Commit lets the socket go: the next process has it. The connection
// closes here without a FIN or a reset (the socket lives on in the other
// process) and its handler hears OnClose(ErrMigrated).
func (d *Detached) Commit() {
	d.File.Close()
	c := d.c
	c.migrated.Store(true)
	c.closeWith(ErrMigrated)
	d.ack <- true
}

// Abort keeps the connection here: reading goes on.
func (d *Detached) Abort() {
	d.File.Close()
	d.ack <- false
	d.c.setMigrating(false)
	d.c.detaching.Store(false)
	d.c.ResumeReadFor(PauseDetach)
}

// setMigrating tells the socket (epoll's) that a close must not shut it
// down: another process has it, or may.
func (c *Conn) setMigrating(on bool) {
	if m, ok := c.base.(interface{ SetMigrating(bool) }); ok {
		m.SetMigrating(on)
	}
}

// Migrated reports whether the connection moved to another process.
func (c *Conn) Migrated() bool { return c.migrated.Load() }

// DupSocket duplicates a socket's descriptor (close-on-exec), without
// making it blocking (as net.TCPConn.File would).
func DupSocket(s any) (*os.File, error) {
	if d, ok := s.(interface{ Dup() (*os.File, error) }); ok {
		return d.Dup()
	}
	sc, ok := s.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T is not a socket", s)
	}
	fd, err := DupFD(sc)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "socket"), nil
}

// DupFD duplicates sc's descriptor (close-on-exec) through its raw
// connection, leaving its blocking mode as it is.
func DupFD(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// Handoff is a connection on its way to the next process (hot
// restart): its handler's part, which the same network filter in the
// next process resumes.
type Handoff struct {
	// Filter is the network filter that resumes it (its config name).
	Filter string
	// Conn is the connection's own socket, a duplicate to send and close.
	Conn *os.File
	// Files are the sockets besides the connection's own (an upstream
	// connection), duplicates to send and close.
	Files []*os.File
	// Pending are the connection's bytes read and not consumed.
	Pending []byte
	// State is the filter's own, opaque to everyone else.
	State []byte
	// Commit: the next process has it; this one lets it go without a FIN
	// or a reset. Abort: it stays here and is served on.
	Commit, Abort func()
}

// Migrator is a connection handler that can move its connection to the
// next process: Migrate holds it (at most wait) and returns its Handoff,
// or an error when it cannot move now (it is then served on untouched).
type Migrator interface {
	Migrate(wait time.Duration) (*Handoff, error)
}

// ConnAdopter is an I/O model that can serve a connection another
// process handed over (hot restart's connection migration).
type ConnAdopter interface {
	// AdoptConn makes a connection of the socket f (a duplicate: f is
	// the caller's to close); the caller attaches a handler and Starts it.
	AdoptConn(ctx context.Context, f *os.File) (*Conn, error)
}

// AdoptConn implements ConnAdopter for netpoll.
func (netpoll) AdoptConn(ctx context.Context, f *os.File) (*Conn, error) {
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	c := NewConn(ctx, NewTCPConn(nc).(Socket))
	c.wake = make(chan struct{}, 1)
	return c, nil
}
