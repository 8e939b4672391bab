package epoll

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reactor is one epoll instance for readiness to read (and accept), waited
// on by several poller goroutines at once. Registrations are one-shot, so
// an event goes to exactly one poller, which runs the connection's reader
// inline: no hand-off between a poller and a reader. A second epoll
// instance, with a goroutine of its own, carries EPOLLOUT for writers, so
// that a writer is woken even when every poller is busy in a handler.
type reactor struct {
	m     *Model
	epfd  int // EPOLLIN, EPOLLRDHUP: readers and listeners
	file  *os.File
	rc    syscall.RawConn
	wepfd int // EPOLLOUT: writers waiting for room

	mu        sync.RWMutex
	conns     map[int32]*conn
	listeners map[int32]*acceptor
}

func newReactor(m *Model, pollers int) (*reactor, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	r := &reactor{m: m, epfd: fd, wepfd: wfd, conns: map[int32]*conn{}, listeners: map[int32]*acceptor{}}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	r.file = os.NewFile(uintptr(fd), "epoll")
	if r.rc, err = r.file.SyscallConn(); err != nil {
		return nil, err
	}
	for i := 0; i < pollers; i++ {
		go r.poll()
	}
	go r.pollWrites()
	return r, nil
}

// poll takes a few events at a time and handles them on this goroutine.
// It never blocks in epoll_wait: the epoll descriptor itself is parked in
// the runtime's poller, which wakes a poller goroutine (without holding an
// OS thread while idle) when the instance has events; the events are then
// taken with a non-blocking epoll_wait.
func (r *reactor) poll() {
	// One event at a time: a poller runs its reader inline, and events it
	// took but could not reach would wait behind a slow handler.
	events := make([]unix.EpollEvent, 1)
	var n int
	take := func(fd uintptr) bool {
		var err error
		n, err = unix.EpollWait(int(fd), events, 0)
		if n < 0 {
			n = 0
		}
		return err != nil || n > 0
	}
	for {
		n = 0
		if err := r.rc.Read(take); err != nil {
			return
		}
		r.m.events.Add(uint64(n))
		for i := 0; i < n; i++ {
			r.dispatch(events[i].Fd, events[i].Events)
		}
	}
}

func (r *reactor) pollWrites() {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(r.wepfd, events, -1)
		if err != nil || n < 0 {
			if err == unix.EINTR {
				continue
			}
			return
		}
		r.m.events.Add(uint64(n))
		for i := 0; i < n; i++ {
			r.mu.RLock()
			c := r.conns[events[i].Fd]
			r.mu.RUnlock()
			if c != nil {
				c.writable()
			}
		}
	}
}

func (r *reactor) dispatch(fd int32, events uint32) {
	r.mu.RLock()
	c := r.conns[fd]
	a := r.listeners[fd]
	r.mu.RUnlock()
	switch {
	case a != nil:
		a.acceptAll()
	case c != nil:
		if c.ready(events) {
			c.run()
		}
	}
}

// remove forgets a connection whose descriptor is being closed.
func (r *reactor) remove(c *conn) {
	r.mu.Lock()
	if r.conns[int32(c.fd)] == c {
		delete(r.conns, int32(c.fd))
	}
	r.mu.Unlock()
}

// count reports the registered connections.
func (r *reactor) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.conns)
}
