package network

import (
	"errors"
	"io"
	"net"

	"github.com/straitproxy/strait/internal/bufpool"
)

// IOModel drives a connection's reads: it decides which goroutine reads the
// socket and when, and delivers the bytes to the connection's Handler.
// Everything above a Conn is the same under every model.
type IOModel interface {
	// Name is the model's config name ("netpoll", "epoll").
	Name() string
	// Start begins delivering c's bytes to its handler and returns at once.
	Start(c *Conn)
}

// Netpoll is the goroutine-per-connection model: one goroutine blocks in
// Read (Go's runtime poller parks it) and delivers what it reads.
var Netpoll IOModel = netpoll{}

type netpoll struct{}

func (netpoll) Name() string { return "netpoll" }

func (netpoll) Start(c *Conn) { go readLoop(c) }

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
	for {
		ok, redeliver := c.waitReadable()
		if !ok {
			return
		}
		if redeliver && end > start {
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
		n, err := c.raw.Read(buf[end:])
		if n > 0 {
			c.rx.Add(uint64(n))
			end += n
			if ok, _ := c.waitReadable(); !ok {
				return
			}
			start += c.handler.OnRead(buf[start:end])
			if start == end {
				start, end = 0, 0
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && !c.Closed() {
				c.handler.OnEOF()
				<-c.ctx.Done()
				return
			}
			if !errors.Is(err, net.ErrClosed) {
				readErr = err
			}
			return
		}
	}
}
