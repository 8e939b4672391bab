package rpc

import (
	"io"
	"sync"

	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/protocol"
)

// FrameHeader marks response headers that carry an upstream reply frame
// as the body (set by the upstream side, read by the server side): the
// frame is relayed with its id rewritten. Headers without it are a local
// reply, encoded by the codec.
const FrameHeader = ":rpc-frame"

// server is the downstream side of one connection: it cuts the bytes read
// into frames, answers heartbeats itself and hands each call to the proxy
// as a stream.
type server struct {
	c    Codec
	conn protocol.Conn
	cb   protocol.ServerCallbacks
	hl   int
	max  int
	lim  int

	// Reader only: the frame being read and the heartbeat scratch.
	cur     *serverStream
	got     int
	scratch []byte
	one     [1][]byte
	ev      Events
	// lingering: a refused frame lost the framing; what comes is dropped
	// until the lingering close ends.
	lingering bool

	out batcher

	mu       sync.Mutex
	active   []*serverStream
	paused   bool
	closed   bool
	draining bool
	eof      bool
	refused  bool // a frame was refused: linger-close once idle
}

func newServer(c Codec, o Options, conn protocol.Conn, cb protocol.ServerCallbacks) *server {
	hl := c.HeaderLen()
	lim := o.MaxActive
	if lim <= 0 {
		lim = DefaultMaxActive
	}
	s := &server{c: c, conn: conn, cb: cb, hl: hl, max: o.maxFrame(hl), lim: lim, ev: o.Events}
	s.out.init(s.write, nil)
	return s
}

// write is the batcher's one writer at a time. A failed write needs no
// more: the connection is gone and its reader sees it.
func (s *server) write(vec [][]byte) error {
	_, err := s.conn.Writev(vec...)
	return err
}

// writeScratch sends s.scratch (reader only).
func (s *server) writeScratch() {
	s.one[0] = s.scratch
	s.out.send(s.one[:])
	s.one[0] = nil
}

// close closes the connection once the replies queued are written.
func (s *server) close() { s.out.closeAfter(s.closeNow) }

func (s *server) closeNow() { s.conn.Close() }

func (s *server) lingerClose() { s.conn.LingerClose(lingerBad) }

// Decode cuts data into frames. A frame's header stays unconsumed until
// it is whole; its body is copied into the call's own buffer as it comes,
// so a large frame never sits in the connection's buffer.
func (s *server) Decode(data []byte) int {
	if s.lingering {
		return len(data)
	}
	n := 0
	for n < len(data) {
		if s.cur == nil {
			if len(data)-n < s.hl {
				return n
			}
			head := data[n : n+s.hl]
			f, err := s.c.Parse(head)
			if err != nil {
				// Not this protocol, or lost framing: nothing to answer.
				s.conn.Close()
				return len(data)
			}
			if f.Len > s.max || f.Len < s.hl {
				if s.ev != nil && (f.Kind == Call || f.Kind == OneWay) {
					s.ev.Decoded(false)
				}
				if f.Kind == Call {
					s.scratch = s.c.AppendError(s.scratch[:0], head, StatusBadRequest, "request frame too large")
					s.writeScratch()
				}
				// The rest of the frame, and anything after it, is
				// dropped while the connection lingers: parsed as frames,
				// it would close the connection at once and the reset
				// could destroy the answer before the client reads it.
				// Calls already in flight are answered first.
				s.lingering = true
				s.mu.Lock()
				s.refused = true
				idle := len(s.active) == 0
				s.mu.Unlock()
				if idle {
					s.out.closeAfter(s.lingerClose)
				}
				return len(data)
			}
			st := getServerStream()
			st.srv, st.id, st.kind = s, f.ID, f.Kind
			st.buf = bufpool.Get(f.Len)
			st.frame = (*st.buf)[:f.Len]
			s.cur, s.got = st, 0
		}
		c := copy(s.cur.frame[s.got:], data[n:])
		n += c
		s.got += c
		if s.got == len(s.cur.frame) {
			st := s.cur
			s.cur = nil
			s.dispatch(st)
		}
	}
	return n
}

// dispatch acts on one whole frame from the client.
func (s *server) dispatch(st *serverStream) {
	switch st.kind {
	case Ping:
		s.scratch = s.c.AppendPong(s.scratch[:0], st.frame[:s.hl])
		s.writeScratch()
		st.release()
		if s.ev != nil {
			s.ev.Heartbeat()
		}
		return
	case Call, OneWay:
	default:
		st.release() // a client does not send replies or other events
		return
	}
	if err := s.c.Request(st.frame, &st.req); err != nil {
		if st.kind == Call {
			s.scratch = s.c.AppendError(s.scratch[:0], st.frame[:s.hl], StatusBadRequest, err.Error())
			s.writeScratch()
		}
		st.release()
		if s.ev != nil {
			s.ev.Decoded(false)
		}
		return
	}
	if s.ev != nil {
		s.ev.Decoded(true)
	}
	if st.kind == OneWay {
		st.req.Set(OneWayHeader, "1")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		st.release()
		return
	}
	st.idx = len(s.active)
	s.active = append(s.active, st)
	pause := len(s.active) >= s.lim && !s.paused
	if pause {
		s.paused = true
	}
	s.mu.Unlock()
	if pause {
		s.conn.PauseRead()
	}
	s.cb.OnStream(st)
}

// done forgets a finished call; a connection paused at its limit reads
// again, and one draining or half-closed closes once idle.
func (s *server) done(st *serverStream) {
	s.mu.Lock()
	if i := st.idx; i >= 0 && i < len(s.active) && s.active[i] == st {
		last := len(s.active) - 1
		s.active[i] = s.active[last]
		s.active[i].idx = i
		s.active[last] = nil
		s.active = s.active[:last]
	}
	st.idx = -1
	resume := s.paused && len(s.active) < s.lim
	if resume {
		s.paused = false
	}
	idle := len(s.active) == 0
	closeNow := (s.draining || s.eof) && idle
	linger := s.refused && idle
	s.mu.Unlock()
	if resume {
		s.conn.ResumeRead()
	}
	switch {
	case linger:
		s.out.closeAfter(s.lingerClose)
	case closeNow:
		s.close()
	}
}

// OnEOF: the client sent its last call; the connection closes once they
// are answered.
func (s *server) OnEOF() {
	s.mu.Lock()
	s.eof = true
	idle := len(s.active) == 0
	s.mu.Unlock()
	if idle {
		s.close()
	}
}

// OnClose: the calls in flight lose their client.
func (s *server) OnClose(error) {
	s.mu.Lock()
	s.closed = true
	for _, st := range s.active {
		st.cancel.Fire()
	}
	s.mu.Unlock()
	if st := s.cur; st != nil {
		s.cur = nil
		st.release()
	}
}

// Drain closes the connection once its calls are answered (Dubbo has no
// goaway; clients reconnect).
func (s *server) Drain() {
	s.mu.Lock()
	s.draining = true
	idle := len(s.active) == 0
	s.mu.Unlock()
	if idle {
		s.close()
	}
}

func (s *server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.active)
}

// serverStream is one call, as the proxy's worker sees it.
type serverStream struct {
	srv   *server
	buf   *[]byte
	frame []byte
	req   protocol.Headers
	id    uint64
	kind  Kind
	idx   int
	read  bool

	// The answer: relayed (pass) or a local reply (status, msg).
	pass    bool
	local   bool
	status  Status
	msg     []byte
	replied bool
	part    []byte // a relayed frame that came in pieces
	out     []byte
	head    [64]byte
	vec     [2][]byte
	cancel  protocol.CancelHook // guarded by srv.mu
}

var streamPool = sync.Pool{New: func() any { return &serverStream{idx: -1} }}

func getServerStream() *serverStream { return streamPool.Get().(*serverStream) }

func (st *serverStream) release() {
	bufpool.Put(st.buf)
	st.req.Reset()
	*st = serverStream{req: st.req, msg: st.msg[:0], part: st.part[:0], out: st.out[:0], idx: -1}
	streamPool.Put(st)
}

func (st *serverStream) Request() *protocol.Headers { return &st.req }
func (st *serverStream) HeadersOnly() bool          { return false }
func (st *serverStream) Protocol() string           { return st.srv.c.Name() }
func (st *serverStream) RequestTrailers() *protocol.Headers {
	return nil
}

// ReadData returns the whole request frame, header included: the upstream
// side sends it on with only its id changed.
func (st *serverStream) ReadData() ([]byte, error) {
	if st.read {
		return nil, io.EOF
	}
	st.read = true
	return st.frame, io.EOF
}

// OnCancel implements protocol.Canceler.
func (st *serverStream) OnCancel(f func()) {
	st.srv.mu.Lock()
	st.cancel.Set(f)
	st.srv.mu.Unlock()
}

func (st *serverStream) WriteHeaders(h *protocol.Headers, end bool) error {
	if st.kind == OneWay || st.replied {
		return nil
	}
	if h.Has(FrameHeader) {
		st.pass = true
	} else {
		st.local = true
		st.status = StatusFor(h.StatusCode(), h.Has("x-envoy-overloaded"))
	}
	if end {
		return st.end()
	}
	return nil
}

func (st *serverStream) WriteData(p []byte, end bool) error {
	if st.kind == OneWay || st.replied {
		return nil
	}
	switch {
	case st.local:
		if room := 1024 - len(st.msg); room > 0 {
			st.msg = append(st.msg, p[:min(room, len(p))]...)
		}
	case st.pass && len(st.part) == 0 && end:
		return st.relay(p)
	case st.pass:
		st.part = append(st.part, p...)
	}
	if end {
		return st.end()
	}
	return nil
}

func (st *serverStream) WriteTrailers(*protocol.Headers) error {
	if st.kind == OneWay || st.replied {
		return nil
	}
	return st.end()
}

// end sends what the response built: the relayed frame or the error.
func (st *serverStream) end() error {
	if st.pass {
		if len(st.part) > 0 {
			return st.relay(st.part)
		}
		return st.reply(StatusUnavailable, "empty upstream reply")
	}
	msg := trimNL(st.msg)
	if len(msg) == 0 {
		return st.reply(st.status, statusText(st.status))
	}
	return st.reply(st.status, string(msg))
}

// relay writes an upstream reply frame with the client's request id.
func (st *serverStream) relay(frame []byte) error {
	hl := st.srv.hl
	if len(frame) < hl {
		return st.reply(StatusUnavailable, "truncated upstream reply")
	}
	st.replied = true
	h := st.head[:hl]
	copy(h, frame[:hl])
	st.srv.c.SetID(h, st.id)
	st.vec[0], st.vec[1] = h, frame[hl:]
	err := st.srv.out.send(st.vec[:])
	st.vec[1] = nil
	return err
}

func (st *serverStream) reply(status Status, msg string) error {
	st.replied = true
	st.out = st.srv.c.AppendError(st.out[:0], st.frame[:st.srv.hl], status, msg)
	st.vec[0] = st.out
	err := st.srv.out.send(st.vec[:1])
	st.vec[0] = nil
	return err
}

// Finish ends the call. A call never answered (the upstream reset, the
// worker gave up) gets an error reply: an RPC client waits for its id.
func (st *serverStream) Finish(reset bool) {
	if st.kind == Call && !st.replied {
		st.reply(StatusUnavailable, "upstream reset before reply")
	}
	st.srv.mu.Lock()
	st.cancel.Clear()
	st.srv.mu.Unlock()
	st.srv.done(st)
	st.release()
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func statusText(s Status) string {
	switch s {
	case StatusBadRequest:
		return "bad request"
	case StatusNoRoute:
		return "no route for the call"
	case StatusUnavailable:
		return "no healthy upstream"
	case StatusTimeout:
		return "upstream timeout"
	case StatusOverload:
		return "overloaded"
	}
	return "error"
}
