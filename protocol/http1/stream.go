package http1

import (
	"errors"
	"strconv"
	"sync/atomic"

	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/protocol"
)

var (
	errBodyTooLong  = errors.New("http1: response body longer than its content-length")
	errBodyTooShort = errors.New("http1: response body shorter than its content-length")
)

// serverStream is the one request in flight on a serverConn. The reader
// fills it; from OnStream on, the worker owns its response side.
type serverStream struct {
	sc   *serverConn
	req  protocol.Headers
	info RequestInfo
	body BodyDecoder
	pipe pipe

	headersOnly bool
	isHead      bool
	trailers    bool
	continued   bool
	// proxyContinue: only SendContinue answers Expect: 100-continue.
	proxyContinue bool

	// response
	keepAlive bool
	framing   Framing
	remaining int64
	// wb is the response's encode buffer, from the pool for the length of
	// one response (an idle connection holds none); head is the part of it
	// not yet written, joined with the next body bytes when they fit.
	wb       *[]byte
	head     []byte
	respDone bool
	upgraded bool
	finished bool
	gen      uint64 // request number on the connection, under sc.mu
	// cancel is the worker's OnCancel function and whether the client
	// left while this request was in flight, under sc.mu.
	cancel protocol.CancelHook
	// answered mirrors respDone for the reader's clientGone.
	answered atomic.Bool
}

// OnCancel implements protocol.Canceler: f runs when the connection ends
// (or the client closes its side) before this request is finished.
func (st *serverStream) OnCancel(f func()) {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	st.cancel.Set(f)
}

// clientGone runs the cancel function of the request in flight. sc.mu
// held.
func (st *serverStream) clientGone() {
	if st.finished || st.answered.Load() {
		return // (answered whole: nothing left to cancel)
	}
	st.cancel.Fire()
}

var (
	_ protocol.ServerStream = (*serverStream)(nil)
	_ protocol.Upgrader     = (*serverStream)(nil)
	_ protocol.ReadCanceler = (*serverStream)(nil)
	_ protocol.Canceler     = (*serverStream)(nil)
	_ protocol.Continuer    = (*serverStream)(nil)
)

// begin readies the stream for a request just parsed (reader goroutine).
func (st *serverStream) begin(info RequestInfo) {
	st.info = info
	st.body.Reset(info.Framing, info.ContentLength, st.sc.lim)
	st.pipe.reset()
	// Content-Length: 0 is as bodiless as no framing at all (#review-1).
	st.headersOnly = st.body.Done()
	if st.headersOnly {
		st.pipe.close(nil)
	}
	st.isHead = string(st.req.Method()) == "HEAD"
	st.trailers, st.continued, st.proxyContinue = false, false, false
	st.keepAlive = info.KeepAlive
	st.respDone, st.upgraded, st.finished = false, false, false
	st.answered.Store(false)
	if !st.req.Has(protocol.Scheme) {
		st.req.Set(protocol.Scheme, st.sc.opts.Scheme)
	}
}

func (st *serverStream) Request() *protocol.Headers { return &st.req }

func (st *serverStream) HeadersOnly() bool { return st.headersOnly }

func (st *serverStream) Protocol() string {
	if st.info.Minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// ReadData answers Expect: 100-continue on first use (unless the proxy
// relays the upstream's), then reads the pipe.
func (st *serverStream) ReadData() ([]byte, error) {
	// (proxyContinue first: then continued belongs to the response
	// writer, which may be another goroutine than this reader.)
	if !st.proxyContinue && st.ExpectsContinue() {
		if err := st.SendContinue(); err != nil {
			return nil, err
		}
	}
	return st.pipe.read()
}

// ExpectsContinue implements protocol.Continuer.
func (st *serverStream) ExpectsContinue() bool {
	return st.info.ExpectContinue && !st.continued && !st.headersOnly
}

// ProxyContinue implements protocol.Continuer.
func (st *serverStream) ProxyContinue() { st.proxyContinue = true }

// SendContinue implements protocol.Continuer.
func (st *serverStream) SendContinue() error {
	if !st.ExpectsContinue() {
		return nil
	}
	st.continued = true
	if _, err := st.sc.c.Write(continueLine); err != nil {
		return protocol.ErrDownstreamReset
	}
	return nil
}

func (st *serverStream) RequestTrailers() *protocol.Headers {
	if st.trailers {
		return &st.body.Trailers
	}
	return nil
}

// WriteHeaders chooses the response framing (RFC 9112 §6) and encodes the
// head; it is written with the first body bytes, or now when end is set.
func (st *serverStream) WriteHeaders(h *protocol.Headers, end bool) error {
	code := h.StatusCode()
	cl, hasCL := contentLength(h)
	st.keepAlive = st.keepAlive && !h.HasToken("connection", "close") && !st.sc.drained()
	if code >= 200 && st.ExpectsContinue() {
		// A final answer to a client still waiting for 100 Continue: it
		// may send the body or not (RFC 9110 §10.1.1), so unless the body
		// came whole the bytes that follow cannot be told from a next
		// request. Close after it, as Go's server does. No 100 Continue
		// may follow the final answer.
		if !st.pipe.complete() {
			st.keepAlive = false
		}
		st.continued = true
	}
	switch {
	case code == 101:
		st.framing = FramingNone
	case st.isHead || code == 204 || code == 304 || code < 200:
		st.framing = FramingNone
	case end:
		st.framing, cl = FramingLength, 0
	case hasCL:
		st.framing = FramingLength
	case st.info.Minor == 1:
		st.framing = FramingChunked
	default:
		st.framing = FramingUntilClose
		st.keepAlive = false
	}
	if code != 101 {
		if !st.keepAlive {
			h.Set("connection", "close")
		} else if st.info.Minor == 0 {
			h.Set("connection", "keep-alive")
		}
	}
	st.remaining = cl
	if st.wb == nil {
		st.wb = bufpool.Get(bufpool.Small)
	}
	st.head = AppendResponseHead((*st.wb)[:0], h, 1, st.framing, cl)
	if end || code == 101 {
		return st.flush(end && code != 101)
	}
	return nil
}

func contentLength(h *protocol.Headers) (int64, bool) {
	v, ok := h.Get("content-length")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

func (st *serverStream) flush(end bool) error {
	if end {
		// Before the write: the client may have it, and close, before
		// the write returns; that is not leaving early.
		st.answered.Store(true)
	}
	if len(st.head) > 0 {
		_, err := st.sc.c.Write(st.head)
		st.head = st.head[:0]
		if err != nil {
			return err
		}
	}
	if end {
		st.respDone = true
	}
	return nil
}

// WriteData frames p and writes it, joined with a pending head.
func (st *serverStream) WriteData(p []byte, end bool) error {
	if st.upgraded {
		if len(p) > 0 {
			if _, err := st.sc.c.Write(p); err != nil {
				return err
			}
		}
		if end {
			return st.sc.c.CloseWrite()
		}
		return nil
	}
	switch st.framing {
	case FramingNone:
		return st.flush(end)
	case FramingLength:
		if int64(len(p)) > st.remaining {
			return errBodyTooLong
		}
		st.remaining -= int64(len(p))
		if end && st.remaining != 0 {
			return errBodyTooShort
		}
		return st.send(p, nil, end)
	case FramingChunked:
		return st.sendChunk(p, end)
	default: // until close
		return st.send(p, nil, end)
	}
}

var (
	lastChunk = []byte("0\r\n\r\n")
	crlf      = []byte("\r\n")
)

// send writes head, p and tail: appended to the head in its buffer and
// written at once when they fit, else as one gathered write.
func (st *serverStream) send(p, tail []byte, end bool) error {
	var err error
	if end {
		st.answered.Store(true) // before the write, as in flush
	}
	n := len(st.head) + len(p) + len(tail)
	switch {
	case n == 0:
	case len(st.head) == 0 && len(tail) == 0:
		_, err = st.sc.c.Write(p)
	case n <= cap(st.head):
		_, err = st.sc.c.Write(append(append(st.head, p...), tail...))
	default:
		_, err = st.sc.c.Writev(st.head, p, tail)
	}
	st.head = st.head[:0]
	if err == nil && end {
		st.respDone = true
	}
	return err
}

var (
	crlfLast = []byte("\r\n0\r\n\r\n")
)

// sendChunk writes p as one chunk, and the last chunk when end is set.
func (st *serverStream) sendChunk(p []byte, end bool) error {
	var tail []byte
	switch {
	case len(p) > 0 && end:
		tail = crlfLast
	case len(p) > 0:
		tail = crlf
	case end:
		tail = lastChunk
	}
	if len(p) > 0 {
		st.head = strconv.AppendUint(st.head, uint64(len(p)), 16)
		st.head = append(st.head, crlf...)
	}
	return st.send(p, tail, end)
}

// WriteTrailers ends a chunked response with trailers; other framings
// cannot carry them and just end.
func (st *serverStream) WriteTrailers(t *protocol.Headers) error {
	if st.framing != FramingChunked {
		return st.WriteData(nil, true)
	}
	st.head = AppendLastChunk(st.head, t)
	return st.send(nil, nil, true)
}

// Upgrade turns the connection into a raw tunnel after a 101.
func (st *serverStream) Upgrade() {
	sc := st.sc
	sc.mu.Lock()
	st.upgraded = true
	st.respDone = true
	st.answered.Store(true)
	st.pipe.reset()
	if sc.state == stWait {
		sc.state = stUpgraded
		sc.c.ResumeRead()
	}
	sc.mu.Unlock()
}

// HoldTunnel implements protocol.TunnelHolder.
func (st *serverStream) HoldTunnel(on bool) { st.pipe.hold(on) }

// TunnelEnded implements protocol.TunnelHolder.
func (st *serverStream) TunnelEnded() bool { return st.pipe.ended() }

var _ protocol.TunnelHolder = (*serverStream)(nil)

func (st *serverStream) Finish(reset bool) { st.sc.finish(reset) }

// ReadCancel returns a function that makes this request's pending and
// next ReadData return err; called after the request ended (a timer that
// fired late), it does nothing, so it cannot touch the next request on the
// connection.
func (st *serverStream) ReadCancel() func(error) {
	sc := st.sc
	sc.mu.Lock()
	gen := st.gen
	sc.mu.Unlock()
	return func(err error) {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if st.gen == gen && !st.finished {
			st.pipe.close(err)
		}
	}
}

// releaseWrite gives back the response's encode buffer (the worker's,
// once the response is done).
func (st *serverStream) releaseWrite() {
	if st.wb != nil {
		bufpool.Put(st.wb)
		st.wb, st.head = nil, nil
	}
}

// releaseRead gives back the request's header storage and body buffers,
// so that an idle connection keeps none; the reader calls it (or the
// worker while the reader waits) between requests.
func (st *serverStream) releaseRead() {
	st.req.Recycle()
	st.body.Trailers.Recycle()
	st.pipe.release()
}
