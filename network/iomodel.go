package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/bufpool"
)

// IOModel drives a listener's accepts and its connections' reads: it
// decides which goroutine reads a socket and when, and delivers the bytes to
// the connection's Handler. Everything above a Conn is the same under every
// model.
type IOModel interface {
	// Name is the model's config name ("netpoll", "epoll").
	Name() string
	// Listen binds a TCP address and calls accept with each new
	// connection, from the model's own goroutine; accept attaches a handler
	// and calls Start, or closes the connection.
	Listen(ctx context.Context, addr string, accept func(*Conn)) (Acceptor, error)
	// Start begins delivering c's bytes to its handler and returns at once.
	Start(c *Conn)
}

// Acceptor is a bound listening socket.
type Acceptor interface {
	Addr() net.Addr
	// Close stops accepting and returns once no accept callback runs.
	Close() error
}

// BatchAcceptor is an Acceptor whose accepts in a row can be bounded
// (Envoy's max_connections_to_accept_per_socket_event): after n
// connections it lets other work run before it accepts the rest of the
// backlog. n <= 0 is no bound. It may be set while the socket accepts.
type BatchAcceptor interface {
	Acceptor
	SetAcceptBatch(n int)
}

var (
	modelsMu sync.Mutex
	models   = map[string]IOModel{}
)

// RegisterModel makes an I/O model selectable by name; it panics on a
// duplicate.
func RegisterModel(m IOModel) {
	modelsMu.Lock()
	defer modelsMu.Unlock()
	if _, dup := models[m.Name()]; dup {
		panic("network: I/O model " + m.Name() + " registered twice")
	}
	models[m.Name()] = m
}

// Model returns the I/O model named name.
func Model(name string) (IOModel, error) {
	modelsMu.Lock()
	defer modelsMu.Unlock()
	if m, ok := models[name]; ok {
		return m, nil
	}
	var names []string
	for n := range models {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("unknown I/O model %q (have %v)", name, names)
}

func init() { RegisterModel(Netpoll) }

// Netpoll is the goroutine-per-connection model: one goroutine blocks in
// Read (Go's runtime poller parks it) and delivers what it reads.
var Netpoll IOModel = netpoll{}

type netpoll struct{}

func (netpoll) Name() string { return "netpoll" }

func (netpoll) Start(c *Conn) {
	if c.wake == nil {
		c.wake = make(chan struct{}, 1)
	}
	go readLoop(c)
}

// Listen binds addr with Go's net package; one goroutine accepts.
func (netpoll) Listen(ctx context.Context, addr string, accept func(*Conn)) (Acceptor, error) {
	ln, err := ListenTCP(addr)
	if err != nil {
		return nil, err
	}
	a := &netAcceptor{ln: ln, done: make(chan struct{})}
	go a.loop(ctx, accept)
	return a, nil
}

type netAcceptor struct {
	ln    net.Listener
	done  chan struct{}
	batch atomic.Int32
}

// SetAcceptBatch implements BatchAcceptor. Go's poller wakes the
// accepting goroutine for one connection at a time, so the nearest thing
// to Envoy's event loop turn is a yield: after n accepts in a row the
// goroutine steps aside for the other runnable ones (other listeners'
// accepts, the connections just accepted) before it takes more.
func (a *netAcceptor) SetAcceptBatch(n int) { a.batch.Store(int32(max(n, 0))) }

func (a *netAcceptor) Addr() net.Addr { return a.ln.Addr() }

// File duplicates the listening socket (hot restart hands it over).
func (a *netAcceptor) File() (*os.File, error) { return ListenerFile(a.ln) }

// ListenTCP serves the socket inherited for addr (hot restart), or binds
// addr.
func ListenTCP(addr string) (net.Listener, error) {
	if f, ok := TakeInherited(addr); ok {
		defer f.Close() // FileListener made a duplicate
		return net.FileListener(f)
	}
	return net.Listen(TCPFamily(addr), addr)
}

// TCPFamily is the network to bind addr on: an IPv4 address (0.0.0.0
// too) binds IPv4 only, an IPv6 one IPv6 only, as Envoy binds them (Go's
// "tcp" would make 0.0.0.0 a dual-stack socket); a name, either.
func TCPFamily(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "tcp"
	}
	switch ip := net.ParseIP(host); {
	case ip == nil:
		return "tcp"
	case ip.To4() != nil:
		return "tcp4"
	}
	return "tcp6"
}

// ListenerFile duplicates ln's socket for a hot restart's next process.
func ListenerFile(ln net.Listener) (*os.File, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("not a TCP listener")
	}
	// Not tl.File(): its Fd() would make the shared socket blocking,
	// stalling this process's own Accept.
	fd, err := DupFD(tl)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "listener"), nil
}

func (a *netAcceptor) Close() error {
	err := a.ln.Close()
	<-a.done
	return err
}

func (a *netAcceptor) loop(ctx context.Context, accept func(*Conn)) {
	defer close(a.done)
	var backoff time.Duration
	inRow := int32(0)
	for {
		if n := a.batch.Load(); n > 0 && inRow >= n {
			inRow = 0
			runtime.Gosched()
		}
		raw, err := a.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and such: back off, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		inRow++
		c := NewConn(ctx, NewTCPConn(raw).(Socket))
		c.wake = make(chan struct{}, 1) // before anyone can resume it
		accept(c)
	}
}

// readLoop owns c's read buffer: bytes [start:end) are read and unconsumed.
func readLoop(c *Conn) {
	bp := bufpool.Get(c.ReadBufferSize)
	buf := *bp
	start, end := 0, 0
	var readErr error
	defer func() {
		bufpool.Put(bp)
		c.finish(readErr)
	}()
	// await waits while reading is paused, handing the connection over
	// to a Detach meanwhile; ok false: the reader is done.
	await := func() (ok, redeliver bool) {
		for {
			ok, redeliver, d := c.waitReadable()
			if d == nil {
				return ok, redeliver
			}
			if d.HandOver(buf[start:end]) {
				return false, false
			}
		}
	}
	for {
		ok, redeliver := await()
		if !ok {
			return
		}
		if (redeliver && end > start) || c.TakeKick() {
			start += c.handler.OnRead(buf[start:end])
			if start == end {
				start, end = 0, 0
			}
			if c.Closed() {
				return
			}
			continue // it may have paused again
		}
		if end == len(buf) {
			if start > 0 {
				end = copy(buf, buf[start:end])
				start = 0
			} else if len(buf) >= c.BufferLimit {
				readErr = ErrBufferLimit
				c.closeWith(readErr)
				return
			} else {
				nb := make([]byte, min(2*len(buf), c.BufferLimit))
				end = copy(nb, buf[start:end])
				buf = nb
				bufpool.Put(bp)
				bp = &buf
			}
		}
		// A kick that came after the check above left a past read
		// deadline: clear it, and deliver the kick first.
		if c.clearInterrupt() && (c.kicked.Load() || c.detaching.Load()) {
			continue
		}
		n, err := c.raw.Read(buf[end:])
		if n > 0 {
			c.rx.Add(uint64(n))
			end += n
			if ok, _ := await(); !ok {
				return
			}
			start += c.handler.OnRead(buf[start:end])
			if start == end {
				start, end = 0, 0
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && c.clearInterrupt() {
				continue // Kick's wake-up, not a failure
			}
			if errors.Is(err, io.EOF) && !c.Closed() {
				c.handler.OnEOF()
				<-c.Context().Done()
				return
			}
			if !errors.Is(err, net.ErrClosed) {
				readErr = err
			}
			return
		}
	}
}
