package http1

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/straitproxy/strait/protocol"
)

// Server-side connection states.
const (
	stHead     = iota // reading a request head
	stBody            // reading the request body into the pipe
	stWait            // request read; waiting for the response to finish
	stDiscard         // response done early; discarding the rest of the body
	stUpgraded        // a 101 was sent: raw bytes into the pipe
	stHeld            // idle, held for a migration: bytes stay unconsumed
	stClosed
)

// maxDiscard bounds the request body bytes read and dropped after an early
// response before the connection is closed instead.
const maxDiscard = 64 << 10

var continueLine = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// serverConn decodes one downstream HTTP/1.1 connection. HTTP/1.1 answers
// in order, so there is one stream at a time, reused request after request;
// pipelined requests wait in the connection's buffer (reading paused)
// until the response before them is done.
type serverConn struct {
	c    protocol.Conn
	opts protocol.ServerOptions
	lim  Limits
	cb   protocol.ServerCallbacks

	mu        sync.Mutex
	state     int
	active    bool
	draining  bool
	eof       bool
	discarded int
	scanned   int // bytes of an incomplete head already searched for its end
	st        serverStream
	// headTimer bounds an incomplete head (RequestHeadersTimeout); armed
	// only once a head is found incomplete, so a head that arrives whole
	// costs nothing. headArmed under mu.
	headTimer *time.Timer
	headArmed bool
}

var _ protocol.ServerCodec = (*serverConn)(nil)

func newServer(c protocol.Conn, opts protocol.ServerOptions, cb protocol.ServerCallbacks) protocol.ServerCodec {
	sc := &serverConn{c: c, opts: opts, cb: cb, lim: Limits{MaxHeaderBytes: opts.MaxHeaderBytes, MaxHeaders: opts.MaxHeaders}}
	if sc.opts.BodyBufferLimit <= 0 {
		sc.opts.BodyBufferLimit = 64 << 10
	}
	if sc.opts.Scheme == "" {
		sc.opts.Scheme = "http"
	}
	sc.st.sc = sc
	sc.st.pipe.init(c, sc.opts.BodyBufferLimit)
	return sc
}

// Decode runs on the connection's reader.
func (sc *serverConn) Decode(data []byte) int {
	total := 0
	for len(data) > 0 {
		n, more := sc.decodeOnce(data)
		total += n
		data = data[n:]
		if !more {
			break
		}
	}
	return total
}

// decodeOnce makes one step in the current state; more=false stops the
// loop (need more bytes, paused, or closed).
func (sc *serverConn) decodeOnce(data []byte) (n int, more bool) {
	sc.mu.Lock()
	state := sc.state
	if state == stWait {
		// A pipelined request: leave it in the buffer until the response
		// before it is done (Finish resumes reading).
		sc.c.PauseRead()
		sc.mu.Unlock()
		return 0, false
	}
	if state == stHeld {
		sc.mu.Unlock()
		return 0, false // the migration sees them and gives up
	}
	sc.mu.Unlock()
	switch state {
	case stHead:
		return sc.decodeHead(data)
	case stBody, stDiscard:
		return sc.decodeBody(data, state == stDiscard)
	case stUpgraded:
		sc.st.pipe.write(data)
		return len(data), true
	}
	return len(data), false // closed: drop
}

func (sc *serverConn) decodeHead(data []byte) (int, bool) {
	st := &sc.st
	if !sc.headMayEnd(data) {
		return 0, false
	}
	n, info, err := ParseRequestHead(data, &st.req, sc.lim)
	if err == ErrNeedMore {
		sc.scanned = len(data)
		sc.armHeadTimer()
		return 0, false
	}
	sc.scanned = 0
	sc.disarmHeadTimer()
	if err != nil {
		sc.protocolError(err)
		return len(data), false
	}
	sc.mu.Lock()
	st.gen++
	st.cancel.Reset()
	sc.mu.Unlock()
	st.begin(info)
	sc.mu.Lock()
	sc.active = true
	if st.headersOnly {
		sc.state = stWait
	} else {
		sc.state = stBody
	}
	sc.mu.Unlock()
	sc.cb.OnStream(st)
	return n, true
}

// armHeadTimer starts the request headers timeout for an incomplete
// head, unless it runs already.
func (sc *serverConn) armHeadTimer() {
	d := sc.opts.RequestHeadersTimeout
	if d <= 0 {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.headArmed || sc.state != stHead {
		return
	}
	sc.headArmed = true
	if sc.headTimer == nil {
		sc.headTimer = time.AfterFunc(d, sc.headTimeout)
	} else {
		sc.headTimer.Reset(d)
	}
}

func (sc *serverConn) disarmHeadTimer() {
	if sc.headTimer == nil {
		return
	}
	sc.mu.Lock()
	armed := sc.headArmed
	sc.headArmed = false
	sc.mu.Unlock()
	if armed {
		sc.headTimer.Stop()
	}
}

// headTimeout answers a head that did not arrive in time with 408, and
// closes (nginx's client_header_timeout, HAProxy's timeout http-request).
func (sc *serverConn) headTimeout() {
	sc.mu.Lock()
	fire := sc.headArmed && sc.state == stHead && !sc.active
	sc.headArmed = false
	sc.mu.Unlock()
	if !fire {
		return
	}
	if c, ok := sc.cb.(protocol.HeadersTimeoutCounter); ok {
		c.OnHeadersTimeout()
	}
	sc.protocolError(newError(408, "request headers timeout"))
}

func (sc *serverConn) decodeBody(data []byte, discard bool) (int, bool) {
	st := &sc.st
	d, consumed, done, err := st.body.Decode(data)
	if err != nil {
		// The worker owns the response now: it answers the error (when it
		// can) and the connection closes when the stream finishes.
		re := &protocol.RequestError{Status: 400, Reason: "bad request body"}
		var pe *Error
		if errors.As(err, &pe) {
			re.Status, re.Reason = pe.Status, pe.Reason
		}
		sc.mu.Lock()
		sc.state = stClosed
		sc.mu.Unlock()
		st.pipe.close(re)
		if discard {
			sc.c.Close()
		}
		return len(data), false
	}
	if len(d) > 0 {
		if discard {
			sc.discarded += len(d)
			if sc.discarded > maxDiscard {
				sc.closeNow()
				return len(data), false
			}
		} else {
			st.pipe.write(d)
		}
	}
	if done {
		if !discard {
			st.trailers = st.body.Trailers.Len() > 0
			st.pipe.close(nil)
		}
		sc.mu.Lock()
		if sc.state == stDiscard {
			sc.nextRequest()
		} else if sc.state == stBody {
			sc.state = stWait
		}
		sc.mu.Unlock()
		return consumed, true
	}
	return consumed, consumed > 0 || len(d) > 0
}

// headMayEnd reports whether data, an incomplete head so far, may now be
// complete: only the bytes that arrived since the last attempt are
// searched for a line end followed by an empty line. Without it, a client
// that sends its head a byte at a time would make every byte rescan the
// whole head (quadratic work, up to the 60 KiB limit).
func (sc *serverConn) headMayEnd(data []byte) bool {
	if sc.scanned == 0 || len(data) > sc.lim.orDefaults().MaxHeaderBytes {
		return true
	}
	tail := data[max(sc.scanned-2, 0):]
	if bytes.Contains(tail, lfLF) || bytes.Contains(tail, lfCRLF) {
		return true
	}
	// The request line just ended: the parser checks it (HTTP/0.9).
	return bytes.IndexByte(data[:sc.scanned], '\n') < 0 && bytes.IndexByte(data[sc.scanned:], '\n') >= 0
}

var (
	lfLF   = []byte("\n\n")
	lfCRLF = []byte("\n\r\n")
)

// protocolError answers a request the parser refused and closes: after a
// framing error nothing further on the connection can be trusted.
func (sc *serverConn) protocolError(err error) {
	status, reason := 400, "bad request"
	var pe *Error
	if errors.As(err, &pe) {
		status, reason = pe.Status, pe.Reason
	}
	sc.mu.Lock()
	busy := sc.active
	sc.state = stClosed
	sc.mu.Unlock()
	if !busy {
		var h protocol.Headers
		h.Set(protocol.Status, strconv.Itoa(status))
		h.Set("content-type", "text/plain")
		h.Set("connection", "close")
		body := reason + "\n"
		out := AppendResponseHead(nil, &h, 1, FramingLength, int64(len(body)))
		sc.c.Write(append(out, body...))
	}
	sc.c.LingerClose(lingerTime) // the client may still be sending
}

// lingerTime bounds how long a connection closed after an answer with
// input still coming drains that input (nginx's lingering_time is 30 s,
// its lingering_timeout 5 s).
const lingerTime = 2 * time.Second

func (sc *serverConn) closeNow() {
	sc.mu.Lock()
	sc.state = stClosed
	sc.mu.Unlock()
	sc.c.Close()
}

// nextRequest returns to reading heads; sc.mu is held.
func (sc *serverConn) nextRequest() {
	sc.active = false
	sc.discarded = 0
	if sc.eof || sc.draining && sc.opts.DrainGrace <= 0 {
		sc.state = stClosed
		sc.c.Close()
		return
	}
	sc.state = stHead
	sc.st.releaseRead()
	sc.c.ResumeRead()
	if sc.draining {
		// Drained while answering with keep-alive: the next request is
		// answered with Connection: close, or the connection closes idle.
		time.AfterFunc(sc.opts.DrainGrace, sc.closeIfIdle)
	}
}

// OnEOF: the client closed its side. Outside a tunnel, a client that
// closes while its request is in flight has left (as Envoy, nginx and
// Go's server take it: HTTP/1.1 has no half-close): the connection closes
// and the request's upstream is cancelled.
func (sc *serverConn) OnEOF() {
	sc.mu.Lock()
	sc.eof = true
	if sc.state == stUpgraded {
		sc.mu.Unlock()
		sc.st.pipe.close(nil)
		return
	}
	if sc.active {
		sc.st.clientGone()
	}
	sc.mu.Unlock()
	sc.c.Close() // idle, answered already, or the request abandoned
}

// OnClose: err is set when the connection failed (a reset by the client):
// the request in flight is abandoned. A close of ours (err nil) leaves it
// to the worker, which closed it or is told by its reads and writes.
func (sc *serverConn) OnClose(err error) {
	sc.mu.Lock()
	sc.state = stClosed
	if sc.headArmed {
		sc.headArmed = false
		sc.headTimer.Stop()
	}
	if err != nil && sc.active {
		sc.st.clientGone()
	}
	sc.mu.Unlock()
	sc.st.pipe.close(protocol.ErrDownstreamReset)
}

// Drain makes the connection close after the answer in flight, which
// carries Connection: close. An idle connection stays open for
// DrainGrace: a request the client sent before it could know is
// answered (with Connection: close) rather than met by a closed socket;
// then, still idle with no request begun, it closes.
func (sc *serverConn) Drain() {
	sc.mu.Lock()
	if sc.draining {
		sc.mu.Unlock()
		return
	}
	sc.draining = true
	idle := !sc.active
	if sc.state == stHeld {
		// Held for a migration: a close now would shut the socket the
		// next process may serve already; ReleaseIdle acts on the drain.
		sc.mu.Unlock()
		return
	}
	sc.mu.Unlock()
	switch {
	case !idle:
	case sc.opts.DrainGrace <= 0:
		sc.c.Close()
	default:
		time.AfterFunc(sc.opts.DrainGrace, sc.closeIfIdle)
	}
}

// HoldIdle implements protocol.IdleHolder: an idle connection (between
// two requests, nothing of the next one read, not closing) stops taking
// requests until ReleaseIdle; what it reads meanwhile stays unconsumed.
func (sc *serverConn) HoldIdle() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.state != stHead || sc.active || sc.eof || sc.draining || sc.scanned != 0 {
		return false
	}
	sc.state = stHeld
	return true
}

// ReleaseIdle implements protocol.IdleHolder: reading requests goes on
// (the caller has the reader offer the bytes held again).
func (sc *serverConn) ReleaseIdle() {
	sc.mu.Lock()
	if sc.state != stHeld {
		sc.mu.Unlock()
		return
	}
	sc.state = stHead
	drained := sc.draining
	sc.mu.Unlock()
	if drained {
		// Drained while held: as Drain does for an idle connection.
		if sc.opts.DrainGrace <= 0 {
			sc.closeIfIdle()
		} else {
			time.AfterFunc(sc.opts.DrainGrace, sc.closeIfIdle)
		}
	}
}

// closeIfIdle ends a drained connection on which no request has begun.
func (sc *serverConn) closeIfIdle() {
	sc.mu.Lock()
	idle := !sc.active && sc.scanned == 0 && sc.state == stHead
	if idle {
		sc.state = stClosed
	}
	sc.mu.Unlock()
	if idle {
		sc.c.Close()
	}
}

// drained reports whether the connection is draining.
func (sc *serverConn) drained() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.draining
}

func (sc *serverConn) Active() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.active {
		return 1
	}
	return 0
}

// finish ends the current stream (from the worker).
func (sc *serverConn) finish(reset bool) {
	st := &sc.st
	sc.mu.Lock()
	if st.finished {
		sc.mu.Unlock()
		return
	}
	st.finished = true
	st.cancel.Clear()
	st.releaseWrite()
	// (A drain that began after the head went out with keep-alive does
	// not close here: the client was told the connection stays; it gets
	// the drained-idle grace of nextRequest.)
	keep := !reset && st.keepAlive && st.respDone && !st.upgraded &&
		!sc.eof && sc.state != stClosed
	switch {
	case !keep:
		incoming := sc.state == stBody || sc.state == stDiscard
		sc.state = stClosed
		sc.mu.Unlock()
		if incoming && !reset && st.respDone {
			sc.c.LingerClose(lingerTime) // answered before the body ended
		} else {
			sc.c.Close()
		}
		return
	case sc.state == stBody:
		sc.state = stDiscard // answered before the body ended: drop the rest
		sc.st.pipe.close(protocol.ErrDownstreamReset)
		if sc.st.pipe.unpause() {
			sc.c.ResumeRead()
		}
	case sc.state == stWait:
		sc.nextRequest()
	}
	sc.mu.Unlock()
}
