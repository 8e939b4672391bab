package epoll

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/straitproxy/strait/network"

	"golang.org/x/sys/unix"
)

// fdSocket is a connection's non-blocking descriptor as a network.Socket.
// Every system call on fd holds fdmu for reading; the descriptor is closed
// only under the write lock, once no call can still use its number (which
// the kernel may hand to the next accepted connection).
type fdSocket struct {
	c             *conn
	fdmu          sync.RWMutex
	fd            int // -1 once closed
	local, remote net.Addr
	rst           atomic.Bool // SO_LINGER 0: the close is a reset
	migrated      atomic.Bool // another process has the socket now
}

func (s *fdSocket) LocalAddr() net.Addr  { return s.local }
func (s *fdSocket) RemoteAddr() net.Addr { return s.remote }

// Read is a plain non-blocking read (the reactor's readers use conn.read).
func (s *fdSocket) Read(p []byte) (int, error) {
	s.fdmu.RLock()
	defer s.fdmu.RUnlock()
	if s.fd < 0 {
		return 0, net.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	return rawErr(network.RawRead(s.fd, p))
}

// Write writes all of p, waiting for EPOLLOUT whenever the socket buffer
// is full: a slow reader on the other end blocks the writer, as under
// netpoll.
func (s *fdSocket) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		n, err := s.write(p)
		total += n
		p = p[n:]
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// SetLinger sets SO_LINGER: 0 makes the close send a reset (and the
// shutdown before it then stops only the reading: a write shutdown
// would send a FIN first).
func (s *fdSocket) SetLinger(sec int) error {
	s.fdmu.RLock()
	defer s.fdmu.RUnlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	s.rst.Store(sec == 0)
	return unix.SetsockoptLinger(s.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(sec)})
}

// Unsent is the bytes the kernel's send queue still holds.
func (s *fdSocket) Unsent() (int, error) {
	s.fdmu.RLock()
	defer s.fdmu.RUnlock()
	if s.fd < 0 {
		return 0, net.ErrClosed
	}
	return unix.IoctlGetInt(s.fd, unix.SIOCOUTQ)
}

// Writev writes the buffers in order with writev(2), all of them.
func (s *fdSocket) Writev(bufs [][]byte) (int64, error) {
	var total int64
	for {
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
		if len(bufs) == 0 {
			return total, nil
		}
		s.fdmu.RLock()
		if s.fd < 0 {
			s.fdmu.RUnlock()
			return total, net.ErrClosed
		}
		n, err := rawErr(network.RawWritev(s.fd, bufs))
		s.fdmu.RUnlock()
		total += int64(n)
		bufs = network.Consume(bufs, n)
		if err := s.afterWrite(err); err != nil {
			return total, err
		}
	}
}

func (s *fdSocket) write(p []byte) (int, error) {
	for {
		s.fdmu.RLock()
		if s.fd < 0 {
			s.fdmu.RUnlock()
			return 0, net.ErrClosed
		}
		n, err := rawErr(network.RawWrite(s.fd, p))
		s.fdmu.RUnlock()
		if n > 0 {
			return n, nil
		}
		if err := s.afterWrite(err); err != nil {
			return 0, err
		}
	}
}

// rawErr turns a raw call's result into (n, error): n is 0 on error.
func rawErr(n int, e syscall.Errno) (int, error) {
	if e != 0 {
		return 0, e
	}
	return n, nil
}

// afterWrite turns EAGAIN into a wait for EPOLLOUT and EINTR into a retry.
func (s *fdSocket) afterWrite(err error) error {
	switch err {
	case nil, unix.EINTR:
		return nil
	case unix.EAGAIN:
		return s.c.waitWritable()
	}
	return &net.OpError{Op: "write", Net: "tcp", Source: s.local, Addr: s.remote, Err: err}
}

// CloseWrite half-closes: the peer reads end of file.
func (s *fdSocket) CloseWrite() error {
	s.fdmu.RLock()
	defer s.fdmu.RUnlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	return unix.Shutdown(s.fd, unix.SHUT_WR)
}

// Close shuts the socket down at once (pending reads and writes fail) and
// leaves closing the descriptor to the connection's reader.
func (s *fdSocket) Close() error {
	s.c.close()
	return nil
}

// SetMigrating marks the socket as (perhaps) handed to another process:
// closing it here must not shut it down (network.Conn.Detach).
func (s *fdSocket) SetMigrating(on bool) { s.migrated.Store(on) }

// Dup duplicates the descriptor (network.DupSocket).
func (s *fdSocket) Dup() (*os.File, error) {
	s.fdmu.RLock()
	defer s.fdmu.RUnlock()
	if s.fd < 0 {
		return nil, net.ErrClosed
	}
	fd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "socket"), nil
}

// shutdown stops both directions without releasing the descriptor.
func (s *fdSocket) shutdown() {
	if s.migrated.Load() {
		return
	}
	s.fdmu.RLock()
	if s.fd >= 0 {
		how := unix.SHUT_RDWR
		if s.rst.Load() {
			how = unix.SHUT_RD
		}
		unix.Shutdown(s.fd, how)
	}
	s.fdmu.RUnlock()
}

// release closes the descriptor once no system call can use it.
func (s *fdSocket) release(epfd, wepfd int) {
	s.fdmu.Lock()
	if s.fd >= 0 {
		unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
		unix.EpollCtl(wepfd, unix.EPOLL_CTL_DEL, s.fd, nil)
		unix.Close(s.fd)
		s.fd = -1
	}
	s.fdmu.Unlock()
}

func sockaddrToTCP(sa unix.Sockaddr) *net.TCPAddr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port}
	}
	return &net.TCPAddr{}
}

// Control runs fn on the descriptor, which stays open meanwhile
// (network.Control).
func (s *fdSocket) Control(fn func(fd int) error) error {
	s.fdmu.RLock()
	defer s.fdmu.RUnlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	return fn(s.fd)
}
