package rpc

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/protocol"
)

// lingerBad is how long a connection that sent an unacceptable frame
// stays open for its error reply to leave.
const lingerBad = time.Second

// mux is one upstream connection carrying many calls: each call sent gets
// the connection's next request id, and replies are matched back by it,
// so calls from many downstream connections share few upstream ones.
type mux struct {
	c    Codec
	nc   net.Conn
	mo   protocol.MuxOptions
	hl   int
	max  int
	lim  int
	beat time.Duration

	out     batcher
	scratch []byte // pongs, reader only

	mu        sync.Mutex
	calls     map[uint64]*clientStream
	reserved  int
	nextID    uint64
	closed    bool
	shutdown  bool
	idleSince time.Time
	pingOut   bool
	timer     *time.Timer
	lastRead  atomic.Int64
}

func newMux(c Codec, o Options, nc net.Conn, mo protocol.MuxOptions) *mux {
	hl := c.HeaderLen()
	lim := o.MaxStreams
	if lim <= 0 {
		lim = DefaultMaxStreams
	}
	if mo.MaxBody > 0 { // the cluster's, over the codec's
		o.MaxBody = mo.MaxBody
	}
	m := &mux{c: c, nc: nc, mo: mo, hl: hl, max: o.maxFrame(hl), lim: lim, beat: o.Heartbeat,
		calls: map[uint64]*clientStream{}, nextID: 1, idleSince: time.Now()}
	switch {
	case mo.Heartbeat > 0:
		m.beat = mo.Heartbeat
	case mo.Heartbeat < 0:
		m.beat = 0
	}
	m.out.init(m.write, m.fail)
	m.lastRead.Store(time.Now().UnixNano())
	if m.beat > 0 {
		m.timer = time.AfterFunc(m.beat, m.heartbeat)
	}
	go m.readLoop()
	return m
}

func (m *mux) NewStream() (protocol.ClientStream, error) {
	m.mu.Lock()
	if m.closed || m.shutdown || m.reserved+len(m.calls) >= m.lim {
		m.mu.Unlock()
		return nil, protocol.ErrMuxFull
	}
	m.reserved++
	m.idleSince = time.Time{}
	m.mu.Unlock()
	cs := clientPool.Get().(*clientStream)
	cs.m = m
	return cs, nil
}

func (m *mux) Capacity() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.shutdown {
		return 0
	}
	return m.lim - m.reserved - len(m.calls)
}

func (m *mux) Active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reserved + len(m.calls)
}

func (m *mux) Usable() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.closed && !m.shutdown
}

func (m *mux) IdleSince() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.idleSince
}

func (m *mux) Shutdown() {
	m.mu.Lock()
	m.shutdown = true
	idle := m.reserved+len(m.calls) == 0
	m.mu.Unlock()
	if idle {
		m.Close()
	}
}

func (m *mux) Close() error {
	m.fail(errClosed)
	return nil
}

// fail closes the connection and fails every call waiting on it.
func (m *mux) fail(err error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	if m.timer != nil {
		m.timer.Stop()
	}
	for _, cs := range m.calls {
		cs.failLocked(protocol.ErrUpstreamResetBeforeResponse)
	}
	m.mu.Unlock()
	m.nc.Close()
	if m.mo.OnClose != nil {
		go m.mo.OnClose() // the pool may hold its lock while it shuts us
	}
}

// ended is called when a call releases its slot.
func (m *mux) ended() {
	m.mu.Lock()
	n := m.reserved + len(m.calls)
	if n == 0 {
		m.idleSince = time.Now()
	}
	closeNow := m.shutdown && n == 0
	m.mu.Unlock()
	if closeNow {
		m.Close()
	}
	if m.mo.OnCapacity != nil {
		m.mo.OnCapacity()
	}
}

// write is the batcher's one writer at a time: head (already holding the
// new id) and the rest of the frame, or frames queued meanwhile, in one
// gathered write.
func (m *mux) write(vec [][]byte) error {
	if vw, ok := m.nc.(interface {
		Writev([][]byte) (int64, error)
	}); ok {
		_, err := vw.Writev(vec)
		return err
	}
	for _, b := range vec {
		if _, err := m.nc.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// heartbeat keeps an idle connection checked: a heartbeat goes out when
// nothing was read for an interval, and one unanswered by the next tick
// closes the connection.
func (m *mux) heartbeat() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	if m.pingOut {
		m.mu.Unlock()
		m.fail(protocol.ErrUpstreamReset)
		return
	}
	quiet := time.Since(time.Unix(0, m.lastRead.Load())) >= m.beat
	var id uint64
	if quiet {
		m.pingOut = true
		id = m.nextID
		m.nextID++
	}
	m.timer.Reset(m.beat)
	m.mu.Unlock()
	if quiet {
		m.out.send([][]byte{m.c.AppendPing(nil, id)})
	}
}

// readLoop cuts replies out of what the upstream sends and hands each to
// the call waiting for its id. A reply over the body limit fails its own
// call and is read past: the connection's other calls go on. The buffer
// grows for a large reply and shrinks back once it is handed on.
func (m *mux) readLoop() {
	buf := make([]byte, bufpool.Large)
	r, w := 0, 0
	skip := 0 // bytes of an oversized reply still to read past
	for {
		if r == w {
			r, w = 0, 0
			if len(buf) > bufpool.Large {
				buf = make([]byte, bufpool.Large)
			}
		}
		if w == len(buf) {
			if r > 0 {
				w = copy(buf, buf[r:w])
				r = 0
			} else {
				nb := make([]byte, 2*len(buf))
				copy(nb, buf[:w])
				buf = nb
			}
		}
		n, err := m.nc.Read(buf[w:])
		if n > 0 {
			m.lastRead.Store(time.Now().UnixNano())
			w += n
		}
		if skip > 0 {
			d := min(skip, w-r)
			r += d
			skip -= d
		}
		for skip == 0 && w-r >= m.hl {
			f, perr := m.c.Parse(buf[r : r+m.hl])
			if perr != nil || f.Len < m.hl {
				m.fail(&protocol.MalformedError{Reason: "bad reply frame"})
				return
			}
			if f.Len > m.max {
				if f.Kind != Reply {
					m.fail(&protocol.MalformedError{Reason: "oversized frame from upstream"})
					return
				}
				m.refuse(f.ID)
				d := min(f.Len, w-r)
				r += d
				skip = f.Len - d
				continue
			}
			if w-r < f.Len {
				if f.Len > len(buf) {
					nb := make([]byte, f.Len)
					w = copy(nb, buf[r:w])
					r, buf = 0, nb
				}
				break
			}
			m.onFrame(f, buf[r:r+f.Len])
			r += f.Len
		}
		if err != nil {
			m.fail(protocol.ErrUpstreamReset)
			return
		}
	}
}

// errReplyTooLarge fails a call whose reply is over the body limit.
var errReplyTooLarge = &protocol.MalformedError{Reason: "upstream reply over the body limit"}

// refuse fails the call waiting for id: its reply is too large to take.
func (m *mux) refuse(id uint64) {
	m.mu.Lock()
	if cs := m.calls[id]; cs != nil {
		cs.failLocked(errReplyTooLarge)
	}
	m.mu.Unlock()
}

// failLocked ends a waiting call with err (m.mu held).
func (cs *clientStream) failLocked(err error) {
	delete(cs.m.calls, cs.id)
	cs.err = err
	cs.signal()
}

func (m *mux) onFrame(f Frame, frame []byte) {
	switch f.Kind {
	case Reply:
		m.mu.Lock()
		cs := m.calls[f.ID]
		if cs != nil {
			delete(m.calls, f.ID)
			cs.resp = bufpool.Get(len(frame))
			cs.frame = (*cs.resp)[:len(frame)]
			copy(cs.frame, frame)
			cs.status = f.Status
			cs.signal()
		}
		m.mu.Unlock()
	case Ping:
		// Never wait on the writer here: an upstream that is itself
		// blocked writing to us would wait for this reader forever.
		m.scratch = m.c.AppendPong(m.scratch[:0], frame[:m.hl])
		m.out.sendNoWait(m.scratch)
	case Pong:
		m.mu.Lock()
		m.pingOut = false
		m.mu.Unlock()
	}
}

// clientStream is one call on an upstream connection, used by one worker.
type clientStream struct {
	m       *mux
	id      uint64
	oneway  bool
	sent    bool
	waiting bool
	// holds: the call keeps its slot until Close (a one-way call, or one
	// the connection closed under); sendErr: why it was never sent whole;
	// cancelled: the client left before the call was sent (under m.mu).
	holds     bool
	sendErr   error
	cancelled error
	req       *[]byte // the request frame when it came in pieces
	reqLen    int
	head      [64]byte
	vec       [2][]byte
	done      chan struct{}
	resp      *[]byte
	frame     []byte
	status    Status
	read      bool
	err       error // guarded by m.mu until done is signalled
	deadline  time.Time
	timer     *time.Timer
}

var clientPool = sync.Pool{New: func() any { return &clientStream{done: make(chan struct{}, 1)} }}

// signal wakes the worker (m.mu held).
func (cs *clientStream) signal() {
	cs.waiting = false
	select {
	case cs.done <- struct{}{}:
	default:
	}
}

func (cs *clientStream) WriteHeaders(h *protocol.Headers, end bool) error {
	if end {
		return &protocol.RequestError{Status: 400, Reason: "an RPC call needs its frame"}
	}
	return nil
}

func (cs *clientStream) WriteData(p []byte, end bool) error {
	if cs.sent {
		return nil
	}
	if !end || cs.req != nil {
		if cs.req == nil {
			cs.req = bufpool.Get(len(p))
			cs.reqLen = 0
		}
		if cs.reqLen+len(p) > len(*cs.req) {
			nb := make([]byte, 2*(cs.reqLen+len(p)))
			copy(nb, (*cs.req)[:cs.reqLen])
			bufpool.Put(cs.req)
			cs.req = &nb
		}
		cs.reqLen += copy((*cs.req)[cs.reqLen:], p)
		if !end {
			return nil
		}
		p = (*cs.req)[:cs.reqLen]
	}
	return cs.send(p)
}

func (cs *clientStream) WriteTrailers(*protocol.Headers) error {
	if cs.req != nil && !cs.sent {
		return cs.send((*cs.req)[:cs.reqLen])
	}
	return nil
}

// send gives the call the connection's next id and writes it. A frame
// refused here was never sent, and its slot goes back at Close.
func (cs *clientStream) send(frame []byte) error {
	m := cs.m
	if len(frame) < m.hl {
		return &protocol.RequestError{Status: 400, Reason: "truncated call frame"}
	}
	f, err := m.c.Parse(frame[:m.hl])
	if err != nil || f.Len != len(frame) {
		return &protocol.RequestError{Status: 400, Reason: "malformed call frame"}
	}
	cs.oneway = f.Kind == OneWay
	m.mu.Lock()
	if cs.cancelled != nil {
		err := cs.cancelled
		m.mu.Unlock()
		return err // not sent: Close gives the slot back
	}
	cs.sent = true
	if m.closed {
		cs.holds = true // nothing to wait for; Close frees the slot
		cs.sendErr = protocol.ErrUpstreamResetBeforeResponse
		m.mu.Unlock()
		return cs.sendErr
	}
	id := m.nextID
	m.nextID++
	cs.id = id
	if !cs.oneway {
		m.reserved--
		m.calls[id] = cs
		cs.waiting = true
	} else {
		cs.holds = true // a one-way call holds its slot until Close
	}
	m.mu.Unlock()
	h := cs.head[:m.hl]
	copy(h, frame[:m.hl])
	m.c.SetID(h, id)
	cs.vec[0], cs.vec[1] = h, frame[m.hl:]
	err = m.out.send(cs.vec[:])
	cs.vec[1] = nil
	if err != nil {
		// A two-way call is failed by the connection's fail as well.
		cs.sendErr = protocol.ErrUpstreamResetBeforeResponse
		return cs.sendErr
	}
	return nil
}

// ReadHeaders waits for the reply. Its status, in HTTP's words, lets
// stats, retries and outlier detection judge it; the frame itself is the
// body, relayed as it is.
func (cs *clientStream) ReadHeaders(h *protocol.Headers) error {
	h.Reset()
	if cs.sendErr != nil {
		return cs.sendErr
	}
	if cs.oneway {
		h.Set(protocol.Status, "200")
		h.Set(FrameHeader, "0")
		return nil
	}
	if !cs.sent {
		return protocol.ErrUpstreamResetBeforeResponse
	}
	if err := cs.wait(); err != nil {
		return err
	}
	h.Set(protocol.Status, httpStatus(cs.status))
	h.Set(FrameHeader, "1")
	if er, ok := cs.m.c.(ExceptionReader); ok && cs.status == StatusOK && er.Exception(cs.frame) {
		h.Set(ExceptionHeader, "1")
	}
	return nil
}

func (cs *clientStream) wait() error {
	var tc <-chan time.Time
	if !cs.deadline.IsZero() {
		d := time.Until(cs.deadline)
		if d <= 0 {
			cs.abandon(os.ErrDeadlineExceeded)
			return os.ErrDeadlineExceeded
		}
		if cs.timer == nil {
			cs.timer = time.NewTimer(d)
		} else {
			cs.timer.Reset(d)
		}
		tc = cs.timer.C
	}
	select {
	case <-cs.done:
		if cs.timer != nil {
			cs.timer.Stop()
		}
	case <-tc:
		cs.abandon(os.ErrDeadlineExceeded)
		return os.ErrDeadlineExceeded
	}
	m := cs.m
	m.mu.Lock()
	err := cs.err
	m.mu.Unlock()
	return err
}

// abandon stops waiting: a reply that comes later is dropped.
func (cs *clientStream) abandon(err error) {
	m := cs.m
	m.mu.Lock()
	if cs.waiting {
		delete(m.calls, cs.id)
		cs.waiting = false
		cs.err = err
	}
	m.mu.Unlock()
	// A reply that raced with the timer left a token: drain it.
	select {
	case <-cs.done:
	default:
	}
}

func (cs *clientStream) EndStream() bool { return cs.oneway }

func (cs *clientStream) ReadData() ([]byte, error) {
	if cs.read || cs.oneway {
		return nil, io.EOF
	}
	cs.read = true
	return cs.frame, io.EOF
}

func (cs *clientStream) Trailers() *protocol.Headers { return nil }

func (cs *clientStream) SetDeadline(t time.Time) { cs.deadline = t }

// Cancel implements protocol.Cancelable: the client left.
func (cs *clientStream) Cancel(err error) {
	m := cs.m
	m.mu.Lock()
	if cs.waiting {
		cs.failLocked(err)
	} else if !cs.sent {
		cs.cancelled = err // send will not send it
	}
	m.mu.Unlock()
}

// Close releases the call's slot; the connection stays usable.
func (cs *clientStream) Close() bool {
	m := cs.m
	cs.abandon(protocol.ErrDownstreamReset) // (a no-op unless waiting)
	m.mu.Lock()
	if !cs.sent || cs.holds {
		m.reserved--
	}
	reusable := !m.closed
	m.mu.Unlock()
	m.ended()
	bufpool.Put(cs.resp)
	bufpool.Put(cs.req)
	timer, done := cs.timer, cs.done
	select {
	case <-done:
	default:
	}
	*cs = clientStream{done: done, timer: timer}
	clientPool.Put(cs)
	return reusable
}

func httpStatus(s Status) string {
	switch s {
	case StatusOK:
		return "200"
	case StatusBadRequest:
		return "400"
	case StatusNoRoute:
		return "404"
	case StatusUnavailable, StatusOverload:
		return "503"
	case StatusTimeout:
		return "504"
	}
	return "500"
}
