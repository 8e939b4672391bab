package epoll

import (
	"sync"

	"golang.org/x/sys/unix"
)

// reactor is one epoll instance and the goroutine that waits on it.
type reactor struct {
	m    *Model
	epfd int

	mu        sync.Mutex
	conns     map[int32]*conn
	listeners map[int32]*acceptor
}

func newReactor(m *Model) (*reactor, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r := &reactor{m: m, epfd: fd, conns: map[int32]*conn{}, listeners: map[int32]*acceptor{}}
	go r.loop()
	return r, nil
}

func (r *reactor) loop() {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(r.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		r.m.events.Add(uint64(n))
		for i := 0; i < n; i++ {
			r.dispatch(events[i].Fd, events[i].Events)
		}
	}
}

func (r *reactor) dispatch(fd int32, events uint32) {
	r.mu.Lock()
	c := r.conns[fd]
	a := r.listeners[fd]
	r.mu.Unlock()
	switch {
	case a != nil:
		a.acceptAll()
	case c != nil:
		c.ready(events)
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
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}
