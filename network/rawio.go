package network

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TCPConn is a *net.TCPConn whose Read and Write make their system calls
// as raw ones, through the connection's syscall.RawConn. The socket is
// non-blocking, so read and write never sleep in the kernel: a call that
// would block returns EAGAIN and the goroutine parks in the runtime poller
// as net.Conn's own Read does (the read is tried first, so no readiness
// is lost). What the raw call saves is the scheduler's bookkeeping around
// a system call: entering and leaving the syscall state, and the system
// monitor handing the P to another thread when a loopback write (which
// delivers the segment to the peer within the call) runs past 20 µs, a
// hand-off that wakes a thread only for it to find nothing to do.
// Deadlines, Close and everything else are the net.TCPConn's.
//
// The fields below carry a call's buffer and outcome to and from its
// callback (a closure would allocate per call). rmu and wmu make them one
// reader's and one writer's at a time, as net.Conn promises callers.
type TCPConn struct {
	*net.TCPConn
	rc syscall.RawConn
	// ReadLimit, when positive, caps the bytes one Read takes (a
	// cluster's per_connection_buffer_limit_bytes: what is read is
	// handed on before the next read, so it bounds the bytes held).
	ReadLimit int

	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	readFn func(uintptr) bool

	wmu      sync.Mutex
	wbuf     []byte
	wn       int
	werr     syscall.Errno
	writeFn  func(uintptr) bool
	vbufs    [][]byte
	vn       int64
	writevFn func(uintptr) bool
}

// NewTCPConn wraps c; c is returned unchanged when it is not TCP.
func NewTCPConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &TCPConn{TCPConn: tc, rc: rc}
	r.readFn, r.writeFn, r.writevFn = r.doRead, r.doWrite, r.doWritev
	return r
}

// Unwrap returns the net.TCPConn.
func (c *TCPConn) Unwrap() *net.TCPConn { return c.TCPConn }

func (c *TCPConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.ReadLimit > 0 && len(p) > c.ReadLimit {
		p = p[:c.ReadLimit]
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readFn)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, c.wrap("read", err)
	case c.rerr != 0:
		return 0, c.wrap("read", os.NewSyscallError("read", c.rerr))
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

func (c *TCPConn) doRead(fd uintptr) bool {
	n, e := RawRead(int(fd), c.rbuf)
	switch e {
	case 0:
		c.rn = n
		return true
	case unix.EAGAIN:
		return false
	}
	c.rerr = e
	return true
}

func (c *TCPConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(c.writeFn)
	n := c.wn
	c.wbuf = nil
	switch {
	case err != nil:
		return n, c.wrap("write", err)
	case c.werr != 0:
		return n, c.wrap("write", os.NewSyscallError("write", c.werr))
	}
	return n, nil
}

func (c *TCPConn) doWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, e := RawWrite(int(fd), c.wbuf[c.wn:])
		switch e {
		case 0:
			c.wn += n
		case unix.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// Writev writes the buffers in order, all of them, with writev(2) (see
// network.Conn.Writev). It consumes bufs.
func (c *TCPConn) Writev(bufs [][]byte) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.vbufs, c.vn, c.werr = bufs, 0, 0
	err := c.rc.Write(c.writevFn)
	n := c.vn
	c.vbufs = nil
	switch {
	case err != nil:
		return n, c.wrap("writev", err)
	case c.werr != 0:
		return n, c.wrap("writev", os.NewSyscallError("writev", c.werr))
	}
	return n, nil
}

func (c *TCPConn) doWritev(fd uintptr) bool {
	for {
		for len(c.vbufs) > 0 && len(c.vbufs[0]) == 0 {
			c.vbufs = c.vbufs[1:]
		}
		if len(c.vbufs) == 0 {
			return true
		}
		n, e := RawWritev(int(fd), c.vbufs)
		switch e {
		case 0:
		case unix.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
		c.vn += int64(n)
		c.vbufs = Consume(c.vbufs, n)
	}
}

// Consume drops the first n bytes written from bufs (a partial writev),
// in place, and returns what is left to write.
func Consume(bufs [][]byte, n int) [][]byte {
	for n > 0 {
		k := min(n, len(bufs[0]))
		bufs[0] = bufs[0][k:]
		n -= k
		if len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return bufs
}

// wrap makes err a *net.OpError as net.Conn's own errors are; a RawConn
// error (closed connection, deadline) is one already, named "raw-read" or
// "raw-write": it gets the plain operation name.
func (c *TCPConn) wrap(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// RawRead is read(2) on a non-blocking descriptor as a raw system call
// (see TCPConn), retried on EINTR; p must not be empty.
func RawRead(fd int, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != unix.EINTR {
			return int(n), e
		}
	}
}

// RawWrite is write(2) as RawRead is read(2); p must not be empty.
func RawWrite(fd int, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != unix.EINTR {
			return int(n), e
		}
	}
}

// RawWritev is writev(2) as RawWrite is write(2), for up to 16 buffers
// (the rest wait for the next call); empty buffers are skipped.
func RawWritev(fd int, bufs [][]byte) (int, syscall.Errno) {
	var iov [16]unix.Iovec
	k := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if k == len(iov) {
			break
		}
		iov[k].Base = &b[0]
		iov[k].SetLen(len(b))
		k++
	}
	if k == 0 {
		return 0, 0
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
		if e != unix.EINTR {
			return int(n), e
		}
	}
}
