package epoll

import (
	"net"
	"sync"

	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/network"
	"golang.org/x/sys/unix"
)

// conn is the reactor's view of one connection. Its fields below mu are
// guarded by mu; buf, start and end belong to whoever holds reading.
type conn struct {
	r    *reactor
	nc   *network.Conn
	sock *fdSocket
	fd   int

	mu       sync.Mutex
	wch      chan struct{} // EPOLLOUT (or close) for a waiting writer; made on first wait
	wantIn   bool          // armed for EPOLLIN
	wantOut  bool          // a writer waits for EPOLLOUT
	outReg   bool          // registered with the writers' epoll instance
	reading  bool          // a reader owns the read side
	again    bool          // readiness or resume arrived while reading
	started  bool          // Start registered it (or found it closed)
	closed   bool
	finished bool
	eof      bool

	buf        *[]byte // unconsumed bytes [start:end]; nil when none
	start, end int
}

// armLocked re-arms the one-shot read registration.
func (c *conn) armLocked() {
	if !c.wantIn || c.closed {
		return
	}
	e := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.fd)}
	unix.EpollCtl(c.r.epfd, unix.EPOLL_CTL_MOD, c.fd, &e)
}

// ready is a poller's dispatch for a read event on c; it reports whether
// the caller became the reader and must run it.
func (c *conn) ready(events uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || !c.wantIn {
		return false
	}
	c.wantIn = false
	return c.claimLocked()
}

// writable is the writers' poller reporting EPOLLOUT (or an error).
func (c *conn) writable() {
	c.mu.Lock()
	if c.wantOut {
		c.wantOut = false
		c.signalWriter()
	}
	c.mu.Unlock()
}

// claimLocked makes the caller the reader, or tells the current reader to
// look again; it reports whether a reader must be started.
func (c *conn) claimLocked() bool {
	if c.reading {
		c.again = true
		return false
	}
	c.reading = true
	return true
}

// signalWriter wakes a writer waiting for EPOLLOUT; c.mu is held.
func (c *conn) signalWriter() {
	if c.wch == nil {
		return
	}
	select {
	case c.wch <- struct{}{}:
	default:
	}
}

// resume is network.Conn's ResumeRead hook: offer the unconsumed bytes
// again and read on.
func (c *conn) resume() {
	c.mu.Lock()
	start := c.started && !c.closed && !c.eof && c.claimLocked()
	c.mu.Unlock()
	if start {
		c.r.m.readers.submit(c)
	}
}

// close is the socket's Close: stop both directions now; the reader (an
// existing one, or one started here) closes the descriptor and reports.
func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.signalWriter()
	if !c.started {
		// Never started: no reader can exist and no handler may hear of
		// it (as under netpoll); give the descriptor back now. A Start
		// that comes later reports the close.
		c.mu.Unlock()
		c.sock.release(c.r.epfd, c.r.wepfd)
		c.r.remove(c)
		return
	}
	c.sock.shutdown()
	start := c.claimLocked()
	c.mu.Unlock()
	if start {
		c.r.m.readers.submit(c)
	}
}

// waitWritable blocks a writer until the socket can take more bytes.
func (c *conn) waitWritable() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.wantOut = true
	op := unix.EPOLL_CTL_MOD
	if !c.outReg {
		op, c.outReg = unix.EPOLL_CTL_ADD, true
	}
	e := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(c.fd)}
	if err := unix.EpollCtl(c.r.wepfd, op, c.fd, &e); err != nil {
		c.wantOut = false
		c.mu.Unlock()
		return err
	}
	if c.wch == nil {
		c.wch = make(chan struct{}, 1)
	}
	wch := c.wch
	c.mu.Unlock()
	<-wch
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	return nil
}

// run is the reader: read until EAGAIN, deliver, re-arm; or stop while
// paused; or finish when closed. Exactly one run is active per conn.
func (c *conn) run() {
	for {
		ok, redeliver := c.nc.Readable()
		if !ok {
			if c.stop() {
				return
			}
			continue
		}
		if redeliver && c.end > c.start {
			c.deliver(0)
			continue
		}
		if c.nc.TakeKick() {
			if c.buf == nil {
				c.nc.Deliver(nil, 0)
			} else {
				c.deliver(0)
			}
			continue
		}
		n, room, err := c.read()
		if n > 0 || err == nil {
			// Paused or closed while reading: keep the bytes, deliver
			// nothing to a handler that closed.
			// (A redelivery Readable reports is moot: everything
			// unconsumed is delivered now.)
			if ok, _ := c.nc.Readable(); !ok {
				c.nc.CountRead(n)
				if c.stop() {
					return
				}
				continue
			}
		}
		switch {
		case n > 0:
			c.deliver(n)
			// A read that did not fill the buffer has most likely drained
			// the socket: re-arm now instead of paying one more read for
			// EAGAIN. The registration is level-triggered, so bytes that
			// arrived meanwhile report at once.
			if n < room && c.park() {
				return
			}
		case err == unix.EAGAIN:
			if c.park() {
				return
			}
		case err == unix.EINTR:
		case err == nil: // end of file
			c.releaseBuf(false)
			c.nc.DeliverEOF()
			c.mu.Lock()
			c.eof = true
			if c.closed {
				c.mu.Unlock()
				c.finish(nil)
				return
			}
			c.reading = false
			c.mu.Unlock()
			return
		default:
			c.finish(err)
			return
		}
	}
}

// read reads into the connection's buffer, taking one from the pool and
// making room as needed; room is how much it asked for.
func (c *conn) read() (n, room int, err error) {
	size := c.nc.ReadBufferSize
	if c.buf == nil {
		c.buf = bufpool.Get(size)
		c.start, c.end = 0, 0
	}
	b := *c.buf
	if c.end == len(b) {
		if c.start > 0 {
			c.end = copy(b, b[c.start:c.end])
			c.start = 0
		} else if len(b) >= c.nc.BufferLimit {
			return 0, 0, network.ErrBufferLimit
		} else {
			size := min(2*len(b), c.nc.BufferLimit)
			nb := bufpool.Get(size)
			*nb = (*nb)[:size] // the class may be larger than the limit
			copy(*nb, b[:c.end])
			bufpool.Put(c.buf)
			c.buf, b = nb, *nb
		}
	}
	room = len(b) - c.end
	n, err = c.sock.Read(b[c.end:])
	if n > 0 {
		c.end += n
		return n, room, nil
	}
	return 0, room, err
}

// deliver offers the unconsumed bytes to the handler; fresh is how many of
// them were just read. The buffer goes back to the pool once empty.
func (c *conn) deliver(fresh int) {
	c.start += c.nc.Deliver((*c.buf)[c.start:c.end], fresh)
	if c.start == c.end {
		c.releaseBuf(false)
	}
}

func (c *conn) releaseBuf(force bool) {
	if c.buf != nil && (force || c.start == c.end) {
		bufpool.Put(c.buf)
		c.buf, c.start, c.end = nil, 0, 0
	}
}

// park ends a read burst at EAGAIN: re-arm for the next readiness unless
// more arrived meanwhile. It reports whether the reader is done.
func (c *conn) park() bool {
	c.releaseBuf(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.again || c.closed {
		c.again = false
		return false
	}
	c.reading = false
	c.wantIn = true
	c.armLocked()
	return true
}

// stop handles a paused or closed connection; it reports whether the
// reader is done (false: state changed, look again).
func (c *conn) stop() bool {
	c.mu.Lock()
	if c.closed || c.nc.Closed() {
		c.mu.Unlock()
		c.finish(nil)
		return true
	}
	if d := c.nc.TakeDetach(); d != nil {
		// A migration (network.Detach): hand the unconsumed bytes over
		// and wait; committed, the socket is another process's now.
		c.mu.Unlock()
		var pending []byte
		if c.buf != nil {
			pending = (*c.buf)[c.start:c.end]
		}
		if d.HandOver(pending) {
			c.finish(nil)
			return true
		}
		return false
	}
	if c.again {
		c.again = false
		c.mu.Unlock()
		return false
	}
	// Paused: a resume will start a reader. The unconsumed bytes stay.
	c.reading = false
	c.mu.Unlock()
	return true
}

// finish releases everything and reports the close; it runs once, on the
// reader.
func (c *conn) finish(err error) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	c.finished = true
	c.closed = true
	c.mu.Unlock()
	c.releaseBuf(true)
	c.sock.shutdown()
	c.sock.release(c.r.epfd, c.r.wepfd)
	c.r.remove(c)
	c.mu.Lock()
	c.signalWriter()
	c.mu.Unlock()
	c.nc.Finish(err)
}
