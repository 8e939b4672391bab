package http2

import (
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Protocol constants (RFC 9113 §6.5.2, §6.9.2).
const (
	frameHeaderLen  = 9
	minMaxFrameSize = 16384
	defaultWindow   = 65535
	maxWindow       = 1<<31 - 1
	// maxPendingOut bounds the frame bytes queued for the socket while it
	// is busy; writers of DATA wait beyond it.
	maxPendingOut = 256 << 10
	// maxQueuedControl is the pending output, made of control frames the
	// peer provoked (PING and SETTINGS acknowledgements, resets, window
	// updates), beyond which the peer is flooding without reading.
	maxQueuedControl = 1 << 20
	// maxDataFrame caps the DATA frames we send whatever the peer's
	// SETTINGS_MAX_FRAME_SIZE, so that the queue stays far below
	// maxQueuedControl.
	maxDataFrame = 64 << 10
	// maxSpare bounds the output buffer kept between flushes.
	maxSpare = 64 << 10
)

// errFlood closes a connection whose peer provokes control frames faster
// than it reads them.
var errFlood = errors.New("http2: peer floods control frames without reading")

// sliceReader feeds one buffered frame to the Framer.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// outBuf collects encoded frames until they are flushed to the socket.
type outBuf struct{ b []byte }

func (o *outBuf) Write(p []byte) (int, error) {
	o.b = append(o.b, p...)
	return len(p), nil
}

// core is what a server and a client connection share: the write queue
// and its single flusher, the Framer and HPACK state, the peer's settings
// and the connection-level flow-control windows. mu guards everything; the
// Framer's read side and the HPACK decoder belong to the reader alone.
type core struct {
	mu    sync.Mutex
	wcond sync.Cond // writers waiting for window or queue space; L = &mu

	sock     io.Writer
	ob       outBuf
	spare    []byte
	flushing bool
	werr     error
	// provoked counts the frames the peer provoked since the last flush
	// took the queue; maxControl bounds them (0: only the byte bound).
	provoked, maxControl int
	// dataFrames counts the DATA frames sent (for the WINDOW_UPDATE bound).
	dataFrames uint64
	// written counts socket writes done (progress, read without mu).
	written atomic.Uint64

	fr   *http2.Framer
	rd   sliceReader
	henc *hpack.Encoder
	hbuf bytes.Buffer
	hdec *hpack.Decoder

	peerMaxFrame   uint32
	peerInitWindow int64
	peerMaxStreams uint32
	sendWindow     int64

	recvAvail   int64 // connection-level bytes the peer may still send
	recvUnacked int64 // consumed and not yet credited
	connWindow  int64
	// streamWindow is the initial window we advertise for each stream.
	streamWindow int64
	// connOnArrival credits the connection window as data arrives, not
	// as it is consumed (the client side): a stream whose consumer
	// stalls (a client that does not read its answer) then holds at most
	// its stream window, never the connection's other streams. The server
	// side credits on consumption, so a client cannot make us buffer more
	// than the connection window.
	connOnArrival bool

	closed bool
	// busy reports, mu held, whether several streams are in flight (the
	// server's table; nil on the client side).
	busy func() bool
}

func (c *core) init(sock io.Writer, streamWindow, connWindow int64) {
	c.wcond.L = &c.mu
	c.sock = sock
	c.fr = http2.NewFramer(&c.ob, &c.rd)
	c.fr.SetMaxReadFrameSize(minMaxFrameSize)
	c.fr.SetReuseFrames()
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.peerMaxFrame = minMaxFrameSize
	c.peerInitWindow = defaultWindow
	c.peerMaxStreams = math.MaxUint32
	c.sendWindow = defaultWindow
	c.streamWindow = streamWindow
	c.connWindow = connWindow
	c.recvAvail = max(connWindow, defaultWindow)
	c.busy = func() bool { return false }
}

// flushLocked writes the queued frames unless another goroutine is doing
// so already (it picks them up). Called, and returns, with mu held.
func (c *core) flushLocked() error {
	for len(c.ob.b) > 0 && !c.flushing && c.werr == nil {
		c.flushing = true
		buf := c.ob.b
		c.ob.b, c.spare = c.spare[:0], nil
		c.provoked = 0
		c.mu.Unlock()
		err := c.write(buf)
		c.mu.Lock()
		c.flushing = false
		if cap(buf) <= maxSpare {
			c.spare = buf[:0]
		}
		if err != nil && c.werr == nil {
			c.werr = err
		}
		c.wcond.Broadcast()
	}
	if c.werr == nil && len(c.ob.b) == 0 && cap(c.ob.b) > maxSpare {
		c.ob.b = nil
	}
	return c.werr
}

// flushChunk is the most one socket write carries: a long queue goes out
// in pieces, so that a drained connection can tell a slow reader (pieces
// keep going) from one that stopped.
const flushChunk = 64 << 10

// write writes buf in pieces of at most flushChunk, counting each.
func (c *core) write(buf []byte) error {
	for len(buf) > 0 {
		n := min(len(buf), flushChunk)
		if _, err := c.sock.Write(buf[:n]); err != nil {
			return err
		}
		c.written.Add(1)
		buf = buf[n:]
	}
	return nil
}

// flushSoonLocked flushes after letting other runnable writers of the
// same connection queue their frames first (one socket write for many
// streams' answers), when others are in flight. mu held.
func (c *core) flushSoonLocked(others bool) error {
	if others && !c.flushing {
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
	}
	return c.flushLocked()
}

// waitQueueLocked holds a writer of bulk data while the queue is over its
// bound and someone is flushing it.
func (c *core) waitQueueLocked() {
	for len(c.ob.b) > maxPendingOut && c.flushing && c.werr == nil {
		c.wcond.Wait()
	}
}

// provokedLocked counts a frame the peer provoked and reports a flood:
// more such frames are waiting for the socket than maxControl (since the
// last flush took the queue), or the queue outgrew its bound, because the
// peer does not read.
func (c *core) provokedLocked() bool {
	c.provoked++
	return (c.maxControl > 0 && c.provoked > c.maxControl) || len(c.ob.b) > maxQueuedControl
}

// encodeHeaders HPACK-encodes h into c.hbuf, skipping the fields HTTP/2
// forbids (RFC 9113 §8.2.2). mu held.
func (c *core) encodeHeaders(h *protocol.Headers, request bool) {
	c.hbuf.Reset()
	h.Visit(func(name, value []byte) bool {
		if len(name) > 0 && name[0] != ':' && skipOutbound(name, value) {
			return true
		}
		if request && string(name) == "host" && h.Has(protocol.Authority) {
			return true
		}
		f := hpack.HeaderField{Name: internName(name)}
		if request || secret(f.Name) {
			// Request values (paths, tokens, ids) are mostly unique and
			// may be credentials: not for the process-wide cache.
			f.Value = string(value)
		} else {
			f.Value = intern(value)
		}
		c.henc.WriteField(f)
		return true
	})
}

// writeHeaderBlock writes c.hbuf as HEADERS plus CONTINUATION frames as
// the peer's frame size requires. mu held.
func (c *core) writeHeaderBlock(id uint32, endStream bool) {
	block := c.hbuf.Bytes()
	max := int(c.peerMaxFrame)
	first := block
	if len(first) > max {
		first = block[:max]
	}
	block = block[len(first):]
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0})
	for len(block) > 0 {
		n := min(len(block), max)
		c.fr.WriteContinuation(id, n == len(block), block[:n])
		block = block[n:]
	}
}

// applySettings applies a peer's SETTINGS in order and acknowledges them.
// adjust is called with the change of the initial stream window so the
// caller can move its open streams' windows. mu held.
func (c *core) applySettings(f *http2.SettingsFrame, adjust func(delta int64) error) error {
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSize(s.Val)
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWindow
			c.peerInitWindow = int64(s.Val)
			if err := adjust(delta); err != nil {
				return err
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.fr.WriteSettingsAck()
	c.wcond.Broadcast()
	return nil
}

// connWindowUpdate applies a WINDOW_UPDATE on stream 0. mu held.
func (c *core) connWindowUpdate(inc uint32) error {
	if c.sendWindow+int64(inc) > maxWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.sendWindow += int64(inc)
	c.wcond.Broadcast()
	return nil
}

// creditConn returns n consumed bytes to the peer's connection window,
// in batches of half the window. mu held.
func (c *core) creditConn(n int64) {
	if n <= 0 {
		return
	}
	c.recvUnacked += n
	if c.recvUnacked >= c.connWindow/2 || c.recvAvail < defaultWindow {
		c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvAvail += c.recvUnacked
		c.recvUnacked = 0
	}
}

// flow is one stream's flow-control state; mu guards it.
type flow struct {
	sendWindow int64
	recvAvail  int64
	unacked    int64
}

// inbox carries a stream's received DATA from the reader to its consumer:
// the reader appends, the consumer takes all at once by swapping buffers.
type inbox struct {
	cond sync.Cond // L = &core.mu
	buf  []byte
	rbuf []byte
	eof  bool
	err  error
	// trailers: the end came with trailers (so the last piece of data is
	// not returned with io.EOF).
	trailers bool
	// pending is what the consumer took last and has not yet credited.
	pending int
}

// fail ends the inbox with err (the first error stays). mu held.
func (in *inbox) fail(err error) {
	if in.err == nil {
		in.err = err
	}
	in.cond.Broadcast()
}

// recvData accounts an arriving DATA frame of wire length n against the
// stream's window and queues its data; padding is credited at once. It
// returns a stream error code, or 0. mu held; the connection window was
// checked by the caller.
func (c *core) recvData(id uint32, fl *flow, in *inbox, n int64, data []byte) http2.ErrCode {
	if n > fl.recvAvail {
		c.creditConn(n)
		return http2.ErrCodeFlowControl
	}
	fl.recvAvail -= n
	if pad := n - int64(len(data)); pad > 0 {
		c.creditConn(pad)
		c.creditStream(id, fl, pad)
	}
	if c.connOnArrival {
		c.creditConn(int64(len(data)))
	}
	if len(data) > 0 {
		in.buf = append(in.buf, data...)
		in.cond.Signal()
	}
	return 0
}

// creditStream returns consumed bytes to a stream's window. mu held.
func (c *core) creditStream(id uint32, fl *flow, n int64) {
	fl.unacked += n
	if fl.unacked >= c.streamWindow/2 {
		c.fr.WriteWindowUpdate(id, uint32(fl.unacked))
		fl.recvAvail += fl.unacked
		fl.unacked = 0
	}
}

// read hands the consumer what arrived, crediting what it consumed
// before; io.EOF after the end, or with the last piece when withEOF is set.
// mu is taken.
func (c *core) read(id uint32, fl *flow, in *inbox, withEOF bool) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := int64(in.pending); n > 0 {
		in.pending = 0
		if !c.connOnArrival {
			c.creditConn(n)
		}
		if !in.eof {
			c.creditStream(id, fl, n)
		}
		c.flushLocked()
	}
	for len(in.buf) == 0 && !in.eof && in.err == nil {
		in.cond.Wait()
	}
	if in.err != nil && !in.eof {
		return nil, in.err
	}
	if len(in.buf) == 0 {
		return nil, io.EOF
	}
	in.rbuf, in.buf = in.buf, in.rbuf[:0]
	in.pending = len(in.rbuf)
	if withEOF && in.eof && !in.trailers {
		return in.rbuf, io.EOF
	}
	return in.rbuf, nil
}

// dropInbox credits everything the stream received and nobody consumed,
// for the connection's window, and frees its buffers. mu held.
func (c *core) dropInbox(in *inbox) {
	if !c.connOnArrival {
		c.creditConn(int64(in.pending + len(in.buf)))
	}
	in.pending = 0
	in.buf, in.rbuf = nil, nil
	if in.err != nil {
		// Data was dropped: a read must report the failure, not an end.
		in.eof = false
	}
}

// sender is the stream sendData writes for: stopErr says why it can no
// longer send (reset, closed); ended marks its sending side closed, before
// the last frame is flushed, so that the peer's next stream never finds it
// still counted. Both are called with mu held.
type sender interface {
	stopErr() error
	ended()
	// held reports and clears a Hold: the write is queued, not flushed.
	held() bool
}

// sendData writes p as DATA frames as the windows allow, waiting for
// credit; it gives up with errStalled after idle without credit, or with
// the error s reports. mu is taken.
func (c *core) sendData(id uint32, fl *flow, p []byte, end bool, idle time.Duration, s sender) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var st *stallTimer
	defer func() { st.stop() }()
	for {
		// The queue wait releases mu: windows and state are read after it.
		c.waitQueueLocked()
		if err := s.stopErr(); err != nil {
			return err
		}
		if c.werr != nil {
			return c.werr
		}
		if len(p) == 0 && !end {
			return nil
		}
		avail := min(fl.sendWindow, c.sendWindow, int64(c.peerMaxFrame), maxDataFrame)
		if len(p) == 0 || avail > 0 {
			st.stop() // progress: the idle clock starts again
			st = nil
			n := min(int64(len(p)), max(avail, 0))
			last := end && n == int64(len(p))
			c.fr.WriteData(id, last, p[:n])
			c.dataFrames++
			fl.sendWindow -= n
			c.sendWindow -= n
			p = p[n:]
			if last {
				s.ended()
			}
			if !last && len(p) == 0 && s.held() {
				return c.werr
			}
			if last || len(p) == 0 {
				return c.flushSoonLocked(last && c.busy())
			}
			if len(c.ob.b) >= maxPendingOut/2 {
				c.flushLocked()
			}
			continue
		}
		// Out of window: push what is queued, then wait for credit.
		c.flushLocked()
		if st != nil && st.fired {
			return errStalled
		}
		if idle > 0 && st == nil {
			st = c.newStallTimer(idle)
		}
		if fl.sendWindow > 0 && c.sendWindow > 0 {
			continue
		}
		c.wcond.Wait()
	}
}

// stallTimer wakes the writers when a wait for window lasted too long.
type stallTimer struct {
	t     *time.Timer
	fired bool // guarded by core.mu
}

func (c *core) newStallTimer(d time.Duration) *stallTimer {
	st := &stallTimer{}
	st.t = time.AfterFunc(d, func() {
		c.mu.Lock()
		st.fired = true
		c.wcond.Broadcast()
		c.mu.Unlock()
	})
	return st
}

func (st *stallTimer) stop() {
	if st != nil {
		st.t.Stop()
	}
}

// errStalled is a stream whose peer gave no flow-control credit for the
// stream idle timeout (a zero-window stall).
var errStalled = errors.New("http2: peer gave no flow-control window within the stream idle timeout")
