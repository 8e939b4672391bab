package http2

import (
	"strconv"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serverStream is one request on a downstream connection. The reader
// fills it (under the connection's mu); one worker answers it.
type serverStream struct {
	// sentReset: we reset it (frames crossing our RST_STREAM are ignored).
	sentReset bool

	sc *serverConn
	id uint32
	flow
	in          inbox
	req         protocol.Headers
	trailers    protocol.Headers
	hasTrailers bool
	headersOnly bool
	clen        int64
	received    int64

	recvDone, sendDone, reset, finished bool
	// expect: the request asked for 100 Continue; continued: it was
	// sent; proxyContinue: only SendContinue sends it.
	expect, continued, proxyContinue bool
	// hold: the next WriteHeaders without endStream is not flushed (the
	// body write that follows flushes both).
	hold bool
	// cancel is the worker's OnCancel function and whether the client
	// reset the stream or the connection ended, under mu.
	cancel protocol.CancelHook
}

var (
	_ protocol.ServerStream = (*serverStream)(nil)
	_ protocol.Canceler     = (*serverStream)(nil)
	_ protocol.Continuer    = (*serverStream)(nil)
)

// OnCancel implements protocol.Canceler.
func (st *serverStream) OnCancel(f func()) {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	st.cancel.Set(f)
}

// clientGone records that the client left the stream and runs the
// worker's cancel function. mu held.
func (st *serverStream) clientGone() {
	if st.finished || st.sendDone {
		return // (answered whole: nothing left to cancel)
	}
	st.cancel.Fire()
}

// newServerStream makes a stream. (Streams are not pooled: a late body
// timer may still hold one after its request ended.) mu held.
func newServerStream(sc *serverConn, id uint32) *serverStream {
	st := &serverStream{sc: sc, id: id, clen: -1}
	st.in.cond.L = &sc.mu
	st.sendWindow = sc.peerInitWindow
	st.recvAvail = max(sc.streamWindow, defaultWindow)
	return st
}

// release gives back a stream's header storage. mu held.
func (st *serverStream) release() {
	st.req.Recycle()
	st.trailers.Recycle()
	st.in.buf, st.in.rbuf = nil, nil
}

func (st *serverStream) Request() *protocol.Headers { return &st.req }
func (st *serverStream) HeadersOnly() bool          { return st.headersOnly }
func (st *serverStream) Protocol() string           { return "HTTP/2" }

// ReadData answers Expect: 100-continue on first use (unless the proxy
// relays the upstream's), then reads the body.
func (st *serverStream) ReadData() ([]byte, error) {
	// (proxyContinue first: then continued belongs to the response
	// writer, which may be another goroutine than this reader.)
	if !st.proxyContinue && st.ExpectsContinue() {
		if err := st.SendContinue(); err != nil {
			return nil, err
		}
	}
	return st.sc.read(st.id, &st.flow, &st.in, true)
}

// ExpectsContinue implements protocol.Continuer.
func (st *serverStream) ExpectsContinue() bool { return st.expect && !st.continued }

// ProxyContinue implements protocol.Continuer.
func (st *serverStream) ProxyContinue() { st.proxyContinue = true }

// SendContinue implements protocol.Continuer: a HEADERS frame with
// :status 100 that does not end the stream (RFC 9113 §8.1).
func (st *serverStream) SendContinue() error {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !st.ExpectsContinue() {
		return nil
	}
	st.continued = true
	sc.waitQueueLocked()
	if err := st.stopErr(); err != nil {
		return err
	}
	sc.hbuf.Reset()
	sc.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "100"})
	sc.writeHeaderBlock(st.id, false)
	return sc.flushLocked()
}

// expectsContinue reports Expect: 100-continue in a request's headers.
func expectsContinue(h *protocol.Headers) bool {
	v, ok := h.Get("expect")
	return ok && protocol.EqualFold(protocol.TrimOWS(v), "100-continue")
}

// Buffered reports whether ReadData would return without waiting.
func (st *serverStream) Buffered() bool {
	st.sc.mu.Lock()
	defer st.sc.mu.Unlock()
	return len(st.in.buf) > 0 || st.in.eof || st.in.err != nil
}

func (st *serverStream) RequestTrailers() *protocol.Headers {
	if st.hasTrailers {
		return &st.trailers
	}
	return nil
}

// stopErr reports why the stream can no longer send. mu held.
func (st *serverStream) stopErr() error {
	if st.reset || st.sendDone || st.sc.closed {
		return protocol.ErrDownstreamReset
	}
	return nil
}

func (st *serverStream) WriteHeaders(h *protocol.Headers, endStream bool) error {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.waitQueueLocked()
	if err := st.stopErr(); err != nil {
		return err
	}
	if st.expect && !st.continued {
		st.continued = true // no 100 Continue after the answer
	}
	sc.encodeHeaders(h, false)
	sc.writeHeaderBlock(st.id, endStream)
	if endStream {
		others := len(sc.streams) > 1
		st.ended()
		return sc.flushSoonLocked(others)
	} else if st.hold {
		st.hold = false
		return sc.werr
	}
	return sc.flushLocked()
}

func (st *serverStream) held() bool {
	h := st.hold
	st.hold = false
	return h
}

// Hold lets the next write without end of stream wait for the one after it.
func (st *serverStream) Hold() { st.hold = true }

func (st *serverStream) WriteData(p []byte, endStream bool) error {
	sc := st.sc
	if err := sc.sendData(st.id, &st.flow, p, endStream, sc.opts.StreamIdleTimeout, st); err != nil {
		if err == errStalled {
			sc.mu.Lock()
			sc.resetStream(st.id, http2.ErrCodeCancel)
			sc.flushLocked()
			sc.mu.Unlock()
			return protocol.ErrDownstreamReset
		}
		return err
	}
	return nil
}

func (st *serverStream) WriteTrailers(t *protocol.Headers) error {
	sc := st.sc
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if err := st.stopErr(); err != nil {
		return err
	}
	sc.encodeHeaders(t, false)
	sc.writeHeaderBlock(st.id, true)
	st.ended()
	return sc.flushLocked()
}

// ended marks the response complete. mu held.
func (st *serverStream) ended() {
	st.sendDone = true
	if st.recvDone {
		st.sc.forget(st)
	}
}

// Finish releases the stream (reset asks nothing more of HTTP/2 than an
// unfinished response already does). A response cut short is reset with CANCEL;
// a complete response to a request whose body is still coming asks the
// client to stop sending with NO_ERROR (RFC 9113 §8.1).
func (st *serverStream) Finish(reset bool) {
	sc := st.sc
	sc.mu.Lock()
	if sc.streams[st.id] == st && !sc.closed {
		switch {
		case !st.sendDone:
			sc.resetStream(st.id, http2.ErrCodeCancel)
		case !st.recvDone:
			sc.resetStream(st.id, http2.ErrCodeNo)
		}
		sc.flushLocked()
	}
	if sc.streams[st.id] == st {
		sc.forget(st)
	}
	st.finished = true
	st.cancel.Clear()
	st.release()
	sc.mu.Unlock()
}

// ReadCancel returns a function that fails this request's body reads.
func (st *serverStream) ReadCancel() func(err error) {
	sc := st.sc
	return func(err error) {
		sc.mu.Lock()
		if !st.finished {
			st.in.fail(err)
		}
		sc.mu.Unlock()
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
