package epoll

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/network"
	"golang.org/x/sys/unix"
)

// acceptor is a non-blocking listening socket registered (level-triggered)
// with one reactor, which accepts until EAGAIN on each readiness.
type acceptor struct {
	m      *Model
	r      *reactor
	fd     int
	addr   *net.TCPAddr
	ctx    context.Context
	accept func(*network.Conn)

	mu     sync.Mutex // held while accepting; Close waits on it
	closed bool
	// batch bounds the accepts per readiness (0: until EAGAIN).
	batch atomic.Int32
}

// SetAcceptBatch implements network.BatchAcceptor: acceptAll takes at
// most n connections per readiness and re-arms; the level-triggered
// registration reports the rest of the backlog on a later epoll_wait,
// after the reactor has served the other events it holds.
func (a *acceptor) SetAcceptBatch(n int) { a.batch.Store(int32(max(n, 0))) }

func listenTCP(addr string) (int, *net.TCPAddr, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return -1, nil, err
	}
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		a := &unix.SockaddrInet4{Port: ta.Port}
		if ip4 != nil {
			copy(a.Addr[:], ip4)
		}
		sa = a
	} else {
		family = unix.AF_INET6
		a := &unix.SockaddrInet6{Port: ta.Port}
		copy(a.Addr[:], ta.IP.To16())
		sa = a
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	if family == unix.AF_INET6 {
		// IPv6 only, as Envoy binds [::] (no ipv4_compat) and netpoll.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, nil, err
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, sockaddrToTCP(bound), nil
}

func (a *acceptor) Addr() net.Addr { return a.addr }

// adoptListener takes an inherited listening socket (hot restart): a
// non-blocking, close-on-exec duplicate of f's descriptor; f is closed.
func adoptListener(f *os.File) (int, *net.TCPAddr, error) {
	defer f.Close()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, sockaddrToTCP(sa), nil
}

// File duplicates the listening socket (hot restart hands it over).
func (a *acceptor) File() (*os.File, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, net.ErrClosed
	}
	fd, err := unix.FcntlInt(uintptr(a.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "listener"), nil
}

// rearm asks for the next readiness; a.mu is held.
func (a *acceptor) rearm() {
	if a.closed {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(a.fd)}
	unix.EpollCtl(a.r.epfd, unix.EPOLL_CTL_MOD, a.fd, &ev)
}

// Close stops accepting; it returns once no accept callback runs.
func (a *acceptor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	a.r.mu.Lock()
	delete(a.r.listeners, int32(a.fd))
	a.r.mu.Unlock()
	unix.EpollCtl(a.r.epfd, unix.EPOLL_CTL_DEL, a.fd, nil)
	return unix.Close(a.fd)
}

// localOf is an accepted connection's local address: the listener's,
// unless the listener is bound to every address (0.0.0.0, ::), when the
// connection's own says which one the peer reached.
func (a *acceptor) localOf(fd int) net.Addr {
	if a.addr != nil && !a.addr.IP.IsUnspecified() {
		return a.addr
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		return sockaddrToTCP(sa)
	}
	return a.addr
}

// acceptAll accepts until EAGAIN, or batch connections, then re-arms the
// one-shot registration.
func (a *acceptor) acceptAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.rearm()
	batch := a.batch.Load()
	for n := int32(0); !a.closed && (batch <= 0 || n < batch); {
		nfd, sa, err := unix.Accept4(a.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
		case unix.EAGAIN, unix.ECONNABORTED:
			return
		case unix.EINTR:
			continue
		default:
			// Out of descriptors: leave the connection in the backlog and
			// try again shortly rather than spin on a level-triggered fd.
			time.Sleep(5 * time.Millisecond)
			return
		}
		unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		// Keep-alive probes as Go's net.Listen sets them (15 s), so that a
		// peer that vanished does not hold a descriptor forever.
		unix.SetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15)
		unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
		n++
		a.m.connAccepted()
		a.accept(a.m.newConn(a.ctx, nfd, a.localOf(nfd), sockaddrToTCP(sa)))
	}
}
