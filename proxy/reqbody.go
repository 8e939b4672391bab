package proxy

import (
	"errors"
	"io"
	"time"

	"github.com/straitproxy/strait/protocol"
)

// Sending the request upstream: headers, then the body as it arrives
// (on the worker, or on a pump goroutine for full-duplex upstreams).

// sendRequest writes the headers, replays the buffered body, then streams
// the rest of the body as the client sends it. Towards a multiplexed
// upstream the rest streams on a goroutine of its own while the response
// is read (full duplex, as gRPC's bidirectional streams need); towards
// HTTP/1.1 the body is sent before the response is awaited.
func (s *Stream) sendRequest() error {
	us := s.us
	s.sentEnd = false
	if s.ds.HeadersOnly() {
		return us.WriteHeaders(s.req, true)
	}
	if h, ok := us.(protocol.Holder); ok && (len(s.body) > 0 || s.bodyAtHand()) {
		h.Hold() // body bytes follow at once: one write for both
	}
	if err := us.WriteHeaders(s.req, false); err != nil {
		return err
	}
	if len(s.body) > 0 {
		s.sentEnd = s.bodyDone && s.reqTrailer == nil
		if err := us.WriteData(s.body, s.sentEnd); err != nil {
			return err
		}
	}
	if ab, ok := us.(protocol.Aborter); ok && !s.bodyDone {
		// What has arrived goes now; only a body still coming needs the
		// pump (a unary gRPC call usually arrives whole).
		for !s.bodyDone && s.bodyAtHand() {
			if err := s.sendBodyPiece(us); err != nil {
				return err
			}
		}
		if !s.bodyDone {
			if !s.relayContinue {
				// The codec's own 100 Continue goes from here, before the
				// pump reads: the response is written on this goroutine.
				s.sendContinue()
			}
			s.pumping = true
			s.pumpDone = make(chan struct{})
			go s.pump(us, ab)
			return nil
		}
	}
	if err := s.awaitContinue(us); err != nil {
		return err
	}
	idle := s.streamIdle()
	s.armBodyTimer()
	defer s.stopBodyTimer()
	for !s.bodyDone {
		if idle > 0 {
			us.SetDeadline(time.Now().Add(idle))
		}
		s.armBodyTimer()
		if err := s.sendBodyPiece(us); err != nil {
			return err
		}
	}
	return s.endBody(us)
}

// continueWait bounds how long a request whose client waits for 100
// Continue waits for the upstream's before the proxy sends its own and
// reads the body: a second, as curl and Go's transport wait for a server
// that never sends one (an HTTP/1.0 server, say).
const continueWait = time.Second

// errAnsweredFirst: the upstream gave its final answer instead of 100
// Continue, so the body is not sent.
var errAnsweredFirst = errors.New("upstream answered before 100 Continue")

// awaitContinue, towards an upstream that takes the body after the head
// on this goroutine (HTTP/1.1), waits for its 100 Continue before reading
// a body the client holds back until then (proxy_100_continue). Towards
// multiplexed upstreams the response reader relays it as it comes.
func (s *Stream) awaitContinue(us protocol.ClientStream) error {
	if !s.relayContinue || s.bodyDone || len(s.body) > 0 || s.bodyAtHand() {
		return nil
	}
	if c, ok := s.ds.(protocol.Continuer); !ok || !c.ExpectsContinue() {
		return nil
	}
	aw, ok := us.(protocol.ContinueAwaiter)
	if !ok {
		return nil
	}
	continued, answered, err := aw.AwaitContinue(time.Now().Add(continueWait))
	switch {
	case err != nil:
		return err
	case answered:
		return errAnsweredFirst
	case !continued:
		// The upstream said nothing in time (it may not know Expect): the
		// proxy lets the client send, as a client stops waiting, since a
		// 100 that comes later could not be read before the body.
		s.sendContinue()
	}
	return nil
}

// holdIfMore lets dst's next write wait for the one after it when src
// has more at hand.
func (s *Stream) holdIfMore(dst any, src any) {
	h, ok := dst.(protocol.Holder)
	if !ok {
		return
	}
	if b, ok := src.(protocol.Buffered); ok && b.Buffered() {
		h.Hold()
	}
}

// bodyAtHand reports whether the next body read would not wait.
func (s *Stream) bodyAtHand() bool {
	b, ok := s.ds.(protocol.Buffered)
	return ok && b.Buffered()
}

// sendBodyPiece relays the next piece of the request body.
func (s *Stream) sendBodyPiece(us protocol.ClientStream) error {
	data, err := s.readBody()
	if err != nil && err != io.EOF {
		var re *protocol.RequestError
		if errors.As(err, &re) || err == errFilterReplied {
			return err
		}
		return protocol.ErrDownstreamReset
	}
	if len(data) > 0 {
		end := err == io.EOF && s.reqTrailer == nil
		if werr := us.WriteData(data, end); werr != nil {
			return werr
		}
		s.sentEnd = end
	}
	return nil
}

// endBody ends the request: trailers, or an empty end of stream.
func (s *Stream) endBody(us protocol.ClientStream) error {
	if s.sentEnd {
		return nil
	}
	if s.reqTrailer != nil {
		return us.WriteTrailers(s.reqTrailer)
	}
	return us.WriteData(nil, true)
}

// pump streams the request body while the worker reads the response. On
// a failure of either side it aborts the upstream stream, which fails the
// worker's pending read. The worker owns the body fields again only after
// pumpDone closes.
func (s *Stream) pump(us protocol.ClientStream, ab protocol.Aborter) {
	defer close(s.pumpDone)
	defer s.stopBodyTimer()
	var err error
	for !s.bodyDone && err == nil {
		s.armBodyTimer()
		err = s.sendBodyPiece(us)
	}
	if err == nil {
		err = s.endBody(us)
	}
	if err != nil {
		ab.Abort(err)
	}
}

// stopPump ends a body pump still running (the response ended first, or
// the attempt failed) and waits for it.
func (s *Stream) stopPump() {
	if !s.pumping {
		return
	}
	if rc, ok := s.ds.(protocol.ReadCanceler); ok {
		rc.ReadCancel()(errPumpStopped)
	}
	if ab, ok := s.us.(protocol.Aborter); ok && !s.pumpFinished() {
		// The pump may wait for window the upstream will never give now
		// that its answer is complete.
		ab.Abort(errPumpStopped)
	}
	<-s.pumpDone
	s.pumping = false
	if !s.bodyDone {
		s.replayable = false
	}
}

// pumpFinished reports, without waiting, whether the pump is done.
func (s *Stream) pumpFinished() bool {
	select {
	case <-s.pumpDone:
		return true
	default:
		return false
	}
}

// errPumpStopped ends a body pump whose request needs no more body.
var errPumpStopped = errors.New("request body no longer needed")
