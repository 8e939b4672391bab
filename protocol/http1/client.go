package http1

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/protocol"
)

// smallWrite is the size up to which the client joins a head and body
// into one buffer and one write.
const smallWrite = 8 << 10

// clientStream is one request on an upstream HTTP/1.1 connection. It is
// kept in the connection's codec state and reused by the next request, so
// a request on a pooled connection allocates nothing here.
type clientStream struct {
	conn protocol.UpstreamConn
	lim  Limits

	// request side
	reqFraming Framing
	remaining  int64
	isHead     bool
	isConnect  bool
	sentAll    bool
	head       []byte
	tail       []byte
	out        []byte

	// response side
	info       ResponseInfo
	body       BodyDecoder
	rbp        *[]byte
	rstart     int
	rend       int
	gotByte    bool
	respDone   bool
	upgraded   bool
	failed     bool
	hasTrailer bool
	deadline   time.Time // as set on the socket
	// onContinue hears the upstream's 100 Continue; interim parses it.
	onContinue func()
	interim    protocol.Headers
	// aborted: Cancel failed the stream from another goroutine.
	aborted atomic.Bool
}

var (
	_ protocol.ClientStream     = (*clientStream)(nil)
	_ protocol.ContinueNotifier = (*clientStream)(nil)
	_ protocol.ContinueAwaiter  = (*clientStream)(nil)
)

func newClient(c protocol.UpstreamConn) protocol.ClientStream {
	state := c.CodecState()
	cs, ok := (*state).(*clientStream)
	if !ok {
		cs = &clientStream{conn: c}
		*state = cs
	}
	cs.reset()
	return cs
}

// Cancel implements protocol.Cancelable: the pending and later reads and
// writes fail at once (a deadline in the past, which SetDeadline then
// keeps), and the connection is not reused. The caller must not call it
// after Close.
func (cs *clientStream) Cancel(error) {
	cs.aborted.Store(true)
	cs.conn.SetDeadline(aLongTimeAgo)
}

var aLongTimeAgo = time.Unix(1, 0)

func (cs *clientStream) reset() {
	cs.aborted.Store(false)
	cs.onContinue = nil
	cs.head, cs.tail, cs.out = cs.head[:0], cs.tail[:0], cs.out[:0]
	cs.sentAll, cs.gotByte, cs.respDone, cs.upgraded, cs.failed, cs.hasTrailer = false, false, false, false, false, false
	cs.rstart, cs.rend = 0, 0
}

// SetDeadline bounds reads and writes. It touches the socket (a runtime
// timer update) only when it must: a deadline is set late by 1/64 of its
// distance, at most maxSlack (a 15 s timeout fires within 235 ms after it
// is due, a 300 s one within 250 ms), and a later call whose deadline
// falls in that slack keeps the one set. A busy connection so updates its
// timer about once per slack rather than once per request. The deadline
// outlives the stream: the next stream on the connection sets its own
// before it reads or writes, and the pool's liveness probe ignores
// deadlines.
func (cs *clientStream) SetDeadline(t time.Time) {
	if cs.aborted.Load() {
		return
	}
	if t.IsZero() {
		if !cs.deadline.IsZero() {
			cs.deadline = t
			cs.conn.SetDeadline(t)
		}
		return
	}
	slack := min(time.Until(t)/64, maxSlack)
	if !cs.deadline.IsZero() && !cs.deadline.Before(t) && cs.deadline.Sub(t) <= slack {
		return
	}
	cs.deadline = t.Add(slack)
	cs.conn.SetDeadline(cs.deadline)
}

// maxSlack bounds how late SetDeadline lets a deadline fire.
const maxSlack = 250 * time.Millisecond

// WriteHeaders encodes the request head: no body when end is set,
// Content-Length framing when the request has one, else chunked.
func (cs *clientStream) WriteHeaders(h *protocol.Headers, end bool) error {
	method := h.Method()
	cs.isHead = string(method) == "HEAD"
	cs.isConnect = string(method) == "CONNECT"
	cl, hasCL := contentLength(h)
	switch {
	case end:
		cs.reqFraming = FramingNone
	case hasCL:
		cs.reqFraming = FramingLength
	default:
		cs.reqFraming = FramingChunked
	}
	cs.remaining = cl
	cs.head = AppendRequestHead(cs.head[:0], h, cs.reqFraming, cl)
	if end {
		return cs.send(nil, nil, true)
	}
	return nil
}

// WriteData frames p; after a 101 it writes raw bytes and end half-closes.
func (cs *clientStream) WriteData(p []byte, end bool) error {
	if cs.upgraded {
		if len(p) > 0 {
			if _, err := cs.conn.Write(p); err != nil {
				return err
			}
		}
		if end {
			if cw, ok := cs.conn.(interface{ CloseWrite() error }); ok {
				return cw.CloseWrite()
			}
		}
		return nil
	}
	switch cs.reqFraming {
	case FramingLength:
		if int64(len(p)) > cs.remaining {
			return errors.New("http1: request body longer than its content-length")
		}
		cs.remaining -= int64(len(p))
		return cs.send(p, nil, end)
	case FramingChunked:
		if len(p) > 0 {
			cs.head = strconv.AppendUint(cs.head, uint64(len(p)), 16)
			cs.head = append(cs.head, crlf...)
		}
		tail := cs.tail[:0]
		if len(p) > 0 {
			tail = append(tail, crlf...)
		}
		if end {
			tail = append(tail, lastChunk...)
		}
		cs.tail = tail
		return cs.send(p, tail, end)
	}
	return cs.send(nil, nil, end)
}

func (cs *clientStream) WriteTrailers(t *protocol.Headers) error {
	if cs.reqFraming != FramingChunked {
		return cs.WriteData(nil, true)
	}
	cs.tail = AppendLastChunk(cs.tail[:0], t)
	return cs.send(nil, cs.tail, true)
}

func (cs *clientStream) send(p, tail []byte, end bool) error {
	var err error
	n := len(cs.head) + len(p) + len(tail)
	switch {
	case n == 0:
	case len(cs.head) == 0 && len(tail) == 0:
		_, err = cs.conn.Write(p)
	case n <= smallWrite:
		cs.out = append(append(append(cs.out[:0], cs.head...), p...), tail...)
		_, err = cs.conn.Write(cs.out)
	default:
		bufs := net.Buffers{cs.head, p, tail}
		_, err = bufs.WriteTo(cs.conn)
	}
	cs.head = cs.head[:0]
	if err != nil {
		cs.failed = true
		return cs.ioError(err)
	}
	if end {
		cs.sentAll = true
	}
	return nil
}

// ioError classifies a read or write failure: a timeout stays a timeout;
// anything before the first response byte is a reset before the response
// (safe to retry on a fresh connection when the request can be replayed).
func (cs *clientStream) ioError(err error) error {
	if cs.aborted.Load() {
		cs.failed = true
		return protocol.ErrDownstreamReset
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	if !cs.gotByte {
		return protocol.ErrUpstreamResetBeforeResponse
	}
	return protocol.ErrUpstreamReset
}

// fill reads more response bytes, compacting or growing the buffer.
func (cs *clientStream) fill() error {
	if cs.rbp == nil {
		cs.rbp = bufpool.Get(bufpool.Medium)
	}
	buf := *cs.rbp
	if cs.rstart > 0 && cs.rstart == cs.rend {
		cs.rstart, cs.rend = 0, 0
	}
	if cs.rend == len(buf) {
		if cs.rstart > 0 {
			cs.rend = copy(buf, buf[cs.rstart:cs.rend])
			cs.rstart = 0
		} else {
			nb := bufpool.Get(2 * len(buf))
			copy(*nb, buf[:cs.rend])
			bufpool.Put(cs.rbp)
			cs.rbp = nb
			buf = *nb
		}
	}
	n, err := cs.conn.Read(buf[cs.rend:])
	if n > 0 {
		cs.gotByte = true
		cs.rend += n
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// ReadHeaders reads the response head, skipping 1xx interim answers
// other than 101.
func (cs *clientStream) ReadHeaders(h *protocol.Headers) error {
	for {
		if cs.rend > cs.rstart {
			n, info, err := ParseResponseHead((*cs.rbp)[cs.rstart:cs.rend], h, cs.lim, cs.isHead, cs.isConnect)
			if err == nil {
				cs.rstart += n
				if info.Status >= 100 && info.Status < 200 && info.Status != 101 {
					if info.Status == 100 && cs.onContinue != nil {
						cs.onContinue()
					}
					continue
				}
				return cs.startBody(info)
			}
			if err != ErrNeedMore {
				cs.failed = true
				var pe *Error
				if errors.As(err, &pe) {
					return &protocol.MalformedError{Reason: pe.Reason}
				}
				return &protocol.MalformedError{Reason: err.Error()}
			}
			if cs.rend-cs.rstart > cs.lim.orDefaults().MaxHeaderBytes {
				cs.failed = true
				return &protocol.MalformedError{Reason: "response headers too large"}
			}
		}
		if err := cs.fill(); err != nil {
			cs.failed = true
			return cs.ioError(err)
		}
	}
}

// OnContinue implements protocol.ContinueNotifier.
func (cs *clientStream) OnContinue(f func()) { cs.onContinue = f }

// AwaitContinue implements protocol.ContinueAwaiter: it flushes the head
// and reads until the first answer that is not a 1xx other than 100.
func (cs *clientStream) AwaitContinue(deadline time.Time) (continued, answered bool, err error) {
	if len(cs.head) > 0 {
		if err := cs.send(nil, nil, false); err != nil {
			return false, false, err
		}
	}
	// The stream's own deadline, when sooner, stays in force.
	wait := deadline
	if !cs.deadline.IsZero() && cs.deadline.Before(wait) {
		wait = cs.deadline
	}
	// A Cancel from another goroutine sets a past deadline: whatever
	// this sets, a Cancel seen after it is applied again.
	cs.conn.SetReadDeadline(wait)
	defer func() {
		cs.conn.SetReadDeadline(cs.deadline)
		if cs.aborted.Load() {
			cs.conn.SetDeadline(aLongTimeAgo)
		}
	}()
	if cs.aborted.Load() {
		cs.conn.SetDeadline(aLongTimeAgo)
		return false, false, protocol.ErrDownstreamReset
	}
	for {
		if cs.rend > cs.rstart {
			n, info, err := ParseResponseHead((*cs.rbp)[cs.rstart:cs.rend], &cs.interim, cs.lim, cs.isHead, cs.isConnect)
			switch {
			case err == ErrNeedMore:
			case err != nil:
				return false, true, nil // ReadHeaders reports it
			case info.Status == 100:
				cs.rstart += n
				if cs.onContinue != nil {
					cs.onContinue()
				}
				return true, false, nil
			case info.Status > 100 && info.Status < 200 && info.Status != 101:
				cs.rstart += n
				continue
			default:
				return false, true, nil // a final answer, left for ReadHeaders
			}
		}
		if err := cs.fill(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !cs.aborted.Load() && wait.Equal(deadline) {
				return false, false, nil
			}
			cs.failed = true
			return false, false, cs.ioError(err)
		}
	}
}

func (cs *clientStream) startBody(info ResponseInfo) error {
	cs.info = info
	if info.Status == 101 {
		cs.upgraded = true
		info.Framing = FramingUntilClose
	}
	cs.body.Reset(info.Framing, info.ContentLength, cs.lim)
	cs.respDone = cs.body.Done()
	return nil
}

func (cs *clientStream) EndStream() bool { return cs.info.Framing == FramingNone && !cs.upgraded }

// ReadData returns the next run of body bytes, valid until the next call.
func (cs *clientStream) ReadData() ([]byte, error) {
	for {
		if cs.respDone {
			return nil, io.EOF
		}
		if cs.rend > cs.rstart {
			d, consumed, done, err := cs.body.Decode((*cs.rbp)[cs.rstart:cs.rend])
			if err != nil {
				cs.failed = true
				return nil, &protocol.MalformedError{Reason: "bad body framing"}
			}
			cs.rstart += consumed
			if done {
				cs.respDone = true
				cs.hasTrailer = cs.body.Trailers.Len() > 0
			}
			if len(d) > 0 && done && !cs.hasTrailer {
				return d, io.EOF
			}
			if len(d) > 0 {
				return d, nil
			}
			if done {
				return nil, io.EOF
			}
			if consumed > 0 {
				continue
			}
		}
		if err := cs.fill(); err != nil {
			if err == io.EOF && cs.info.Framing == FramingUntilClose {
				cs.respDone = true
				return nil, io.EOF
			}
			cs.failed = true
			return nil, cs.ioError(err)
		}
	}
}

// Buffered reports whether ReadData has body bytes at hand.
func (cs *clientStream) Buffered() bool { return cs.respDone || cs.rend > cs.rstart }

func (cs *clientStream) Trailers() *protocol.Headers {
	if cs.hasTrailer {
		return &cs.body.Trailers
	}
	return nil
}

// Close reports whether the connection may carry another request: the
// request was sent whole, the response read whole with nothing after it,
// and both sides meant to keep the connection.
func (cs *clientStream) Close() bool {
	reusable := !cs.failed && !cs.aborted.Load() && cs.sentAll && cs.respDone && !cs.upgraded &&
		cs.info.KeepAlive && cs.info.Framing != FramingUntilClose && cs.rstart == cs.rend
	if cs.rbp != nil {
		bufpool.Put(cs.rbp)
		cs.rbp = nil
	}
	cs.rstart, cs.rend = 0, 0
	return reusable
}
