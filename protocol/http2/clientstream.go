package http2

import (
	"errors"
	"os"
	"time"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
)

// clientStream is one request on an upstream HTTP/2 connection.
type clientStream struct {
	cc *clientConn
	id uint32
	flow
	in          inbox
	resp        protocol.Headers
	trailers    protocol.Headers
	hasTrailers bool

	gotHeaders, endOnHeaders, respDone bool
	sentEnd, reset, closed, hold       bool
	stopSend                           bool // the server reset with NO_ERROR after answering
	deadline                           *time.Timer
	timedOut                           bool
	// continues counts the upstream's 100 Continue not yet told to
	// onContinue.
	continues  int
	onContinue func()
}

var (
	_ protocol.ClientStream     = (*clientStream)(nil)
	_ protocol.ContinueNotifier = (*clientStream)(nil)
)

// failLocked fails the stream's pending and future calls. mu held.
func (cs *clientStream) failLocked(err error) {
	cs.in.fail(err)
	cs.cc.wcond.Broadcast()
}

// stopErr says why the stream can no longer send. mu held.
func (cs *clientStream) stopErr() error {
	switch {
	case cs.timedOut:
		return os.ErrDeadlineExceeded
	case cs.in.err != nil:
		return cs.in.err
	case cs.reset || cs.sentEnd || cs.stopSend:
		return protocol.ErrUpstreamReset
	}
	return nil
}

func (cs *clientStream) ended() { cs.sentEnd = true }

// WriteHeaders sends the request headers, opening the stream.
func (cs *clientStream) WriteHeaders(h *protocol.Headers, end bool) error {
	cc := cs.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cs.id != 0 {
		return errors.New("http2: headers sent twice")
	}
	// Wait for queue room before taking an id: ids must go out in order
	// (RFC 9113 §5.1.1), so nothing releases mu between here and the write.
	cc.waitQueueLocked()
	if cc.dead != nil || cc.goingAway {
		// Never opened: fail it whole, so that no read waits on it.
		cs.in.fail(errGoingAway)
		return errGoingAway
	}
	cs.id = cc.nextID
	cc.nextID += 2
	if cc.nextID > maxStreamID {
		cc.goingAway = true // ids run out: this is the last stream here
	}
	cc.reserved--
	cc.streams[cs.id] = cs
	cs.sendWindow = cc.peerInitWindow
	cs.recvAvail = max(cc.streamWindow, defaultWindow)
	if !h.Has(protocol.Scheme) {
		h.Set(protocol.Scheme, "http")
	}
	cc.encodeHeaders(h, true)
	cc.writeHeaderBlock(cs.id, end)
	if end {
		cs.sentEnd = true
	} else if cs.hold {
		cs.hold = false
		return cc.werr
	}
	return cc.flushLocked()
}

func (cs *clientStream) held() bool {
	h := cs.hold
	cs.hold = false
	return h
}

// Hold lets the next write without end of stream wait for the one after it.
func (cs *clientStream) Hold() { cs.hold = true }

func (cs *clientStream) WriteData(p []byte, end bool) error {
	return cs.cc.sendData(cs.id, &cs.flow, p, end, 0, cs)
}

func (cs *clientStream) WriteTrailers(t *protocol.Headers) error {
	cc := cs.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if err := cs.stopErr(); err != nil {
		return err
	}
	cc.encodeHeaders(t, false)
	cc.writeHeaderBlock(cs.id, true)
	cs.sentEnd = true
	return cc.flushLocked()
}

// ReadHeaders waits for the final response headers.
func (cs *clientStream) ReadHeaders(h *protocol.Headers) error {
	cc := cs.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for !cs.gotHeaders && cs.in.err == nil && !cs.timedOut {
		if cs.continues > 0 && cs.onContinue != nil {
			cs.continues--
			f := cs.onContinue
			cc.mu.Unlock()
			f() // (it writes downstream: not under the connection's lock)
			cc.mu.Lock()
			continue
		}
		cs.in.cond.Wait()
	}
	if !cs.gotHeaders {
		if cs.timedOut {
			return os.ErrDeadlineExceeded
		}
		return cs.in.err
	}
	h.CopyFrom(&cs.resp)
	return nil
}

func (cs *clientStream) EndStream() bool { return cs.endOnHeaders }

// OnContinue implements protocol.ContinueNotifier.
func (cs *clientStream) OnContinue(f func()) {
	cs.cc.mu.Lock()
	cs.onContinue = f
	cs.cc.mu.Unlock()
}

func (cs *clientStream) ReadData() ([]byte, error) {
	return cs.cc.read(cs.id, &cs.flow, &cs.in, true)
}

// Buffered reports whether ReadData has data or the end at hand.
func (cs *clientStream) Buffered() bool {
	cs.cc.mu.Lock()
	defer cs.cc.mu.Unlock()
	return len(cs.in.buf) > 0 || cs.in.eof || cs.in.err != nil
}

func (cs *clientStream) Trailers() *protocol.Headers {
	if cs.hasTrailers {
		return &cs.trailers
	}
	return nil
}

// SetDeadline bounds the stream's waits; past it, they fail with
// os.ErrDeadlineExceeded.
func (cs *clientStream) SetDeadline(t time.Time) {
	cc := cs.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cs.timedOut = false
	if cs.deadline != nil {
		cs.deadline.Stop()
		cs.deadline = nil
	}
	if t.IsZero() {
		return
	}
	cs.deadline = time.AfterFunc(time.Until(t), func() {
		cc.mu.Lock()
		cs.timedOut = true
		cs.in.fail(os.ErrDeadlineExceeded)
		cc.wcond.Broadcast()
		cc.mu.Unlock()
	})
}

// Cancel implements protocol.Cancelable: it is Abort.
func (cs *clientStream) Cancel(err error) { cs.Abort(err) }

// Abort resets the stream from any goroutine; pending calls fail with err.
func (cs *clientStream) Abort(err error) {
	cc := cs.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cs.closed || cs.reset {
		return
	}
	if cs.id != 0 && cc.dead == nil {
		cc.fr.WriteRSTStream(cs.id, http2.ErrCodeCancel)
		cc.flushLocked()
	}
	cs.reset = true
	cs.failLocked(err)
}

// Close ends the stream, resetting it if either side is unfinished. The
// connection stays for other streams.
func (cs *clientStream) Close() bool {
	cc := cs.cc
	cc.mu.Lock()
	if cs.closed {
		cc.mu.Unlock()
		return false
	}
	cs.closed = true
	if cs.deadline != nil {
		cs.deadline.Stop()
	}
	if cs.id == 0 {
		cc.reserved--
	} else if cc.streams[cs.id] == cs {
		if (!cs.respDone || !cs.sentEnd) && !cs.reset && cc.dead == nil {
			cc.fr.WriteRSTStream(cs.id, http2.ErrCodeCancel)
		}
		delete(cc.streams, cs.id)
		cc.dropInbox(&cs.in)
		cc.flushLocked()
	}
	cs.resp.Recycle()
	cs.trailers.Recycle()
	cc.lastActive = time.Now()
	ok := cc.dead == nil
	shut := cc.goingAway && len(cc.streams)+cc.reserved == 0
	cc.mu.Unlock()
	if cc.opts.OnCapacity != nil {
		cc.opts.OnCapacity()
	}
	if shut {
		cc.Close()
	}
	return ok
}
