package epoll

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/straitproxy/strait/network"
	"golang.org/x/sys/unix"
)

// Model is the epoll I/O model. Its reactors start with the first
// listener that uses it.
type Model struct {
	once     sync.Once
	startErr error
	reactors []*reactor
	next     atomic.Uint32
	readers  readerPool

	events   atomic.Uint64
	accepted atomic.Uint64
}

// Default is the model registered as "epoll".
var Default = &Model{}

var _ network.IOModel = (*Model)(nil)

func init() { network.RegisterModel(Default) }

// Name implements network.IOModel.
func (m *Model) Name() string { return "epoll" }

func (m *Model) start() error {
	m.once.Do(func() {
		n := runtime.GOMAXPROCS(0)
		m.readers.max = 4 * n
		// Pollers run readers inline; a few more than cores, so that
		// some keep polling while others wait in a handler.
		r, err := newReactor(m, 2*n)
		if err != nil {
			m.startErr = fmt.Errorf("epoll: %w", err)
			return
		}
		m.reactors = append(m.reactors, r)
	})
	return m.startErr
}

func (m *Model) pick() *reactor {
	return m.reactors[int(m.next.Add(1))%len(m.reactors)]
}

// Listen implements network.IOModel with a non-blocking socket accepted by
// a reactor.
func (m *Model) Listen(ctx context.Context, addr string, accept func(*network.Conn)) (network.Acceptor, error) {
	if err := m.start(); err != nil {
		return nil, err
	}
	var fd int
	var bound *net.TCPAddr
	var err error
	if f, ok := network.TakeInherited(addr); ok {
		fd, bound, err = adoptListener(f)
	} else {
		fd, bound, err = listenTCP(addr)
	}
	if err != nil {
		return nil, err
	}
	a := &acceptor{m: m, r: m.pick(), fd: fd, addr: bound, ctx: ctx, accept: accept}
	a.r.mu.Lock()
	a.r.listeners[int32(fd)] = a
	a.r.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(a.r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (m *Model) connAccepted() { m.accepted.Add(1) }

func (m *Model) newConn(ctx context.Context, fd int, local, remote net.Addr) *network.Conn {
	c := &conn{r: m.pick(), fd: fd}
	c.sock = &fdSocket{c: c, fd: fd, local: local, remote: remote}
	c.nc = network.NewConn(ctx, c.sock)
	c.nc.SetOnResume(c.resume)
	// Known to the reactor from the start, so that a writer's EPOLLOUT
	// finds it even before Start.
	c.r.mu.Lock()
	c.r.conns[int32(fd)] = c
	c.r.mu.Unlock()
	return c.nc
}

// AdoptConn implements network.ConnAdopter: a connection of a socket a
// hot restart handed over, made non-blocking and served by a reactor.
func (m *Model) AdoptConn(ctx context.Context, f *os.File) (*network.Conn, error) {
	if err := m.start(); err != nil {
		return nil, err
	}
	fd, err := network.DupFD(f)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	lsa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	rsa, err := unix.Getpeername(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return m.newConn(ctx, fd, sockaddrToTCP(lsa), sockaddrToTCP(rsa)), nil
}

// Start implements network.IOModel: register for the first readiness.
func (m *Model) Start(nc *network.Conn) {
	s, ok := nc.Socket().(*fdSocket)
	if !ok {
		panic("epoll: Start on a connection it did not accept")
	}
	c := s.c
	c.mu.Lock()
	c.started = true
	if !c.closed {
		c.wantIn = true
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.fd)}
		if err := unix.EpollCtl(c.r.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err == nil {
			c.mu.Unlock()
			return
		}
		c.wantIn = false
		c.closed = true
		c.sock.shutdown()
	}
	// Closed before or while starting: a reader reports it.
	start := c.claimLocked()
	c.mu.Unlock()
	if start {
		m.readers.submit(c)
	}
}

// Events reports the readiness events handled so far (reactor_events).
func (m *Model) Events() uint64 { return m.events.Load() }

// Connections reports the connections registered with the reactors.
func (m *Model) Connections() int {
	n := 0
	for _, r := range m.reactors {
		n += r.count()
	}
	return n
}

// Readers reports the reader goroutines alive (bounded by 4 × GOMAXPROCS).
func (m *Model) Readers() int { return m.readers.alive() }

// readerPool runs conn readers on a few long-lived goroutines. A
// connection is queued at most once (its reading flag), so the queue is
// bounded by the connections; the reactors never block on it.
type readerPool struct {
	mu    sync.Mutex
	cond  sync.Cond
	queue []*conn
	idle  int
	n     int
	max   int
}

func (p *readerPool) submit(c *conn) {
	p.mu.Lock()
	if p.cond.L == nil {
		p.cond.L = &p.mu
	}
	p.queue = append(p.queue, c)
	switch {
	case p.idle > 0:
		p.cond.Signal()
	case p.n < p.max:
		p.n++
		go p.work()
	}
	p.mu.Unlock()
}

func (p *readerPool) work() {
	p.mu.Lock()
	for {
		for len(p.queue) == 0 {
			p.idle++
			p.cond.Wait()
			p.idle--
		}
		c := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		p.mu.Unlock()
		c.run()
		p.mu.Lock()
	}
}

func (p *readerPool) alive() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
