package epoll

import (
	"sync"

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
	for i := 0; i < pollers; i++ {
		go r.poll()
	}
	go r.pollWrites()
	return r, nil
}

// poll waits for one event at a time and handles it on this goroutine.
func (r *reactor) poll() {
	events := make([]unix.EpollEvent, 1)
	for {
		n, err := unix.EpollWait(r.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		if n == 1 {
			r.m.events.Add(1)
			r.dispatch(events[0].Fd, events[0].Events)
		}
	}
}

func (r *reactor) pollWrites() {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(r.wepfd, events, -1)
		if err != nil {
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

// add registers a new connection for its first readiness.
func (r *reactor) add(c *conn) error {
	r.mu.Lock()
	r.conns[int32(c.fd)] = c
	r.mu.Unlock()
	c.mu.Lock()
	c.wantIn = true
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.fd)}
	err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev)
	c.mu.Unlock()
	return err
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
