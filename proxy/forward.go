package proxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/upstream"
)

// maxSafeRetries bounds the silent retries of a request that met a pooled
// connection the upstream had just closed: one, on a new connection, as
// Go's HTTP client retries.
const maxSafeRetries = 1

// forward sends the request upstream, retrying as the route's policy says,
// then relays the response.
func (s *Stream) forward() {
	cl := s.cluster
	if !cl.Breaker.AcquireRequest() {
		cl.Stats.RqOverflow.Inc()
		s.replyError(&Error{Kind: KindOverflow, Source: Upstream})
		return
	}
	defer cl.Breaker.ReleaseRequest()
	cl.Stats.RqTotal.Inc()
	cl.Stats.RqActive.Inc()
	defer cl.Stats.RqActive.Dec()
	s.upStart = time.Now()
	if s.route.Timeout > 0 {
		// From here, as Envoy's router times a request: the time a
		// filter held it does not count.
		s.deadline = s.upStart.Add(s.route.Timeout)
	}
	s.capByGRPCTimeout()
	if c, ok := s.ds.(protocol.Canceler); ok {
		c.OnCancel(s.cancelFn)
		defer c.OnCancel(nil)
	}
	policy := s.route.Retry
	retrying := false
	for {
		err := s.tryOnce()
		if errors.Is(err, errFilterReplied) {
			// A data filter answered the request (413, a denial): the
			// attempt ends, and the body pump with it, then the reply
			// goes out.
			s.dropAttempt(false)
			s.closeAfter = !s.bodyDone
			s.sendPendingReply()
			return
		}
		if s.gone.Load() {
			// The client left: the attempt was aborted (or never sent).
			s.dropAttempt(false)
			s.flags = "DC"
			s.resetDownstream()
			return
		}
		if retrying {
			cl.Breaker.ReleaseRetry()
			retrying = false
		}
		if err == nil && s.resp.StatusCode() == 101 && !s.upgrade {
			// A switch nobody asked for would leave the client tunnelling
			// bytes we still parse as requests.
			err = &protocol.MalformedError{Reason: "unsolicited 101 Switching Protocols"}
		}
		if err == nil {
			code := s.resp.StatusCode()
			if policy != nil && s.pumping && s.us.EndStream() {
				// A headers-only answer ends the exchange: the body pump
				// can stop, and the request is replayable if its body was
				// whole.
				s.stopPump()
			}
			if policy != nil && (policy.ShouldRetryStatus(code) || s.grpc && grpcRetry(policy, &s.resp)) && s.mayRetry(policy) {
				s.dropAttempt(false)
				retrying = true
				continue
			}
			if s.attempt > 1 {
				cl.Stats.RqRetrySuccess.Inc()
			}
			s.respond()
			return
		}
		s.dropAttempt(true)
		var re *protocol.RequestError
		if errors.As(err, &re) {
			s.closeAfter = true
			s.localReply(re.Status, re.Reason, false)
			return
		}
		e := s.classifyTimeout(classify(err, s.timer == timerPerTry || s.timer == timerPerTryIdle))
		if e.Kind == KindDownstreamReset {
			s.resetDownstream()
			return
		}
		if e.Kind == KindResetBeforeHeaders && s.prevConnReused && s.safeRetries < maxSafeRetries && !s.pumping && s.replayable && s.idempotent() {
			// The pooled connection died under us (the upstream closed it
			// unannounced): not the upstream's fault, and safe to send
			// again, on a new connection.
			s.safeRetries++
			s.attempt--
			s.cluster.Stats.RqStaleRetry.Inc()
			continue
		}
		if policy != nil && retryOnError(policy, e) && s.mayRetry(policy) {
			retrying = true
			continue
		}
		switch e.Kind {
		case KindTimeout, KindPerTryTimeout:
			cl.Stats.RqTimeout.Inc()
			s.cfg.Stats.RqTimeout.Inc()
		case KindStreamIdleTimeout:
			if !s.bodyDone && !s.ds.HeadersOnly() {
				// The request is not complete: 408, as Envoy answers.
				s.flags = "SI"
				s.closeAfter = true
				s.localReply(errStreamTimeout.Status, errStreamTimeout.Reason, false)
				return
			}
		}
		s.replyError(e)
		return
	}
}

// retryOnError applies retry_on to an error without a response.
func retryOnError(p *router.RetryPolicy, e *Error) bool {
	if !e.Retryable {
		return false
	}
	on := p.On
	switch e.Kind {
	case KindConnectFailure:
		return on&(router.Retry5xx|router.RetryGatewayError|router.RetryConnectFailure|router.RetryReset) != 0
	case KindPerTryTimeout:
		return on&(router.Retry5xx|router.RetryGatewayError|router.RetryReset) != 0
	case KindResetBeforeHeaders:
		return on&(router.Retry5xx|router.RetryGatewayError|router.RetryReset|router.RetryRefusedStream) != 0
	case KindReset:
		return on&(router.Retry5xx|router.RetryGatewayError|router.RetryReset) != 0
	}
	return false
}

// mayRetry checks the retry budget, the replay buffer and the circuit
// breaker, counts the retry and waits the back-off.
func (s *Stream) mayRetry(p *router.RetryPolicy) bool {
	cl := s.cluster
	if s.pumping || s.attempt > int(p.NumRetries) || !s.replayable {
		return false
	}
	if !s.deadline.IsZero() && time.Now().After(s.deadline) {
		return false
	}
	if !cl.Breaker.AcquireRetry() {
		cl.Stats.RqRetryOverflow.Inc()
		return false
	}
	cl.Stats.RqRetry.Inc()
	// Fully jittered exponential back-off, as Envoy.
	ceil := p.BackOffBase << min(s.attempt-1, 10)
	if ceil > p.BackOffMax {
		ceil = p.BackOffMax
	}
	if ceil > 0 {
		time.Sleep(time.Duration(rand.Int64N(int64(ceil))))
	}
	return true
}

// tryOnce is one attempt: choose a host, get a connection, send the
// request, receive the response headers.
func (s *Stream) tryOnce() error {
	s.attempt++
	s.hint = upstream.PickHint{Random: s.random + uint64(s.attempt)*0x9e3779b97f4a7c15, Avoid: s.prevHost}
	h := s.cluster.Pick(&s.hint)
	if h == nil {
		return &Error{Kind: KindNoHealthy, Source: Upstream}
	}
	s.host = h
	if s.route.AutoHostRewrite && h.Hostname != "" {
		s.req.Set(protocol.Authority, h.Hostname)
	}
	h.Active.Add(1)
	h.RqTotal.Add(1)
	wait := time.Duration(0)
	if !s.deadline.IsZero() {
		if wait = time.Until(s.deadline); wait <= 0 {
			return &Error{Kind: KindTimeout, Source: Upstream, Err: upstream.ErrPendingTimeout}
		}
	}
	if err := s.openStream(h, wait); err != nil {
		return err
	}
	if !s.watchAttempt() {
		return protocol.ErrDownstreamReset
	}
	s.us.SetDeadline(s.responseDeadline()) // bounds sending too
	if err := s.sendRequest(); err != nil {
		if err == errFilterReplied || !upstreamSendError(err) || s.conn != nil && s.prevConnReused && !s.connChecked {
			// (On a reused HTTP/1.1 connection not probed before use, an
			// answer may predate the request, e.g. an idle 408: the safe
			// retry is right. A probed one held nothing unasked.)
			return err
		}
		// The upstream may have answered before it stopped taking the
		// body (an early 413, a trailers-only gRPC status): relay that.
		if s.us.ReadHeaders(&s.resp) != nil {
			return err
		}
		s.replayable = false
		return nil
	}
	s.us.SetDeadline(s.responseDeadline())
	return s.us.ReadHeaders(&s.resp)
}

// openStream gets an upstream stream: a multiplexed stream for HTTP/2
// upstreams, else a pooled connection of its own.
func (s *Stream) openStream(h *upstream.Host, wait time.Duration) error {
	codec := s.cluster.CodecForHost(h, s.h2)
	if codec.NewMux != nil {
		us, reused, err := h.Mux().NewStream(s.cm.conn.Context(), wait)
		if err != nil {
			return err
		}
		s.us, s.prevConnReused = us, reused
		return nil
	}
	// A request that may not be sent twice gets a connection probed
	// first; the retry of one that met a dead pooled connection, a new one.
	reuse := upstream.ReuseAny
	switch {
	case s.safeRetries > 0:
		reuse = upstream.ReuseNone
	case !s.idempotent():
		reuse = upstream.ReuseChecked
	}
	s.connChecked = reuse != upstream.ReuseAny
	conn, err := h.Pool().Acquire(s.cm.conn.Context(), wait, reuse)
	if errors.Is(err, upstream.ErrProtocolSwitched) {
		return s.openStream(h, wait) // now the host's protocol is h2
	}
	if err != nil {
		return err
	}
	s.conn = conn
	s.prevConnReused = conn.Reused
	s.us = codec.NewClient(conn)
	return nil
}

// upstreamSendError reports a failure to send that came from the upstream
// side (not the client going away, not a malformed request body).
func upstreamSendError(err error) bool {
	var re *protocol.RequestError
	return !errors.Is(err, protocol.ErrDownstreamReset) && !errors.As(err, &re)
}

// responseDeadline is the earliest of the route timeout, the per-try
// timeout, the per-try idle timeout and the stream idle timeout, the
// others counted from now; s.timer records which one it is.
func (s *Stream) responseDeadline() time.Time {
	now := time.Now()
	d, which := s.deadline, timerRoute
	if d.IsZero() {
		which = timerNone
	}
	earlier := func(after time.Duration, w timerKind) {
		if after <= 0 {
			return
		}
		if t := now.Add(after); d.IsZero() || t.Before(d) {
			d, which = t, w
		}
	}
	if p := s.route.Retry; p != nil {
		earlier(p.PerTryTimeout, timerPerTry)
		earlier(p.PerTryIdleTimeout, timerPerTryIdle)
	}
	if !s.pumping {
		// (While a body is pumped up, bytes move: the stream is not idle.)
		earlier(s.streamIdle(), timerStreamIdle)
	}
	s.timer = which
	return d
}

// bodyDeadline bounds the next read of the response body: the route
// timeout, the stream idle timeout and the per-try idle timeout (per-try
// timeouts end with the response headers).
func (s *Stream) bodyDeadline() time.Time {
	now := time.Now()
	d, which := s.deadline, timerRoute
	if d.IsZero() {
		which = timerNone
	}
	for _, t := range []struct {
		after time.Duration
		w     timerKind
	}{{s.streamIdle(), timerStreamIdle}, {s.perTryIdle(), timerPerTryIdle}} {
		if t.after > 0 {
			if at := now.Add(t.after); d.IsZero() || at.Before(d) {
				d, which = at, t.w
			}
		}
	}
	s.timer = which
	return d
}

// timerKind names the deadline in effect on the upstream stream.
type timerKind uint8

const (
	timerNone timerKind = iota
	timerRoute
	timerPerTry
	timerPerTryIdle
	timerStreamIdle
)

// streamIdle is the stream idle timeout of this request: the route's
// idle_timeout (0 there disables it), else the connection manager's
// stream_idle_timeout.
func (s *Stream) streamIdle() time.Duration {
	if s.route != nil {
		switch d := s.route.IdleTimeout; {
		case d == router.IdleTimeoutDisabled:
			return 0
		case d > 0:
			return d
		}
	}
	return s.cfg.StreamIdleTimeout
}

func (s *Stream) perTryIdle() time.Duration {
	if p := s.route.Retry; p != nil {
		return p.PerTryIdleTimeout
	}
	return 0
}

// classifyTimeout names a timeout by the deadline that fired and counts
// the per-try ones (each time one fires, retried or not, as Envoy).
func (s *Stream) classifyTimeout(e *Error) *Error {
	if e.Kind != KindTimeout && e.Kind != KindPerTryTimeout {
		return e
	}
	switch s.timer {
	case timerStreamIdle:
		s.cfg.Stats.RqIdleTimeout.Inc()
		return &Error{Kind: KindStreamIdleTimeout, Source: Upstream, Err: e.Err}
	case timerPerTryIdle:
		s.cluster.Stats.RqPerTryIdleTimeout.Inc()
	case timerPerTry:
		s.cluster.Stats.RqPerTryTimeout.Inc()
	}
	return e
}

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
			s.pumping = true
			s.pumpDone = make(chan struct{})
			go s.pump(us, ab)
			return nil
		}
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

// filterResponseData passes a piece of response body (and at its end the
// trailers) through the encoders; false: a buffering encoder passed the
// buffer limit.
func (s *Stream) filterResponseData(data []byte, err error) ([]byte, bool) {
	t := s.us.Trailers()
	end := err == io.EOF && t == nil
	out, ok := s.encodeData(data, end, false)
	if ok && err == io.EOF && t != nil {
		var rest []byte
		if rest, ok = s.encodeData(nil, false, true); ok && len(rest) > 0 {
			out = append(out[:len(out):len(out)], rest...)
		}
		if ok {
			s.encodeTrailers(t)
		}
	}
	return out, ok
}

// errFilterReplied ends an attempt whose request a data filter answered.
var errFilterReplied = errors.New("a filter answered the request")

// errEncodeBuffer ends a response an encoder buffered past the limit.
var errEncodeBuffer = errors.New("response buffer limit exceeded")

// errPumpStopped ends a body pump whose request needs no more body.
var errPumpStopped = errors.New("request body no longer needed")

// dropAttempt closes the attempt's upstream stream; the connection is
// closed unless the response was read whole.
func (s *Stream) dropAttempt(failed bool) {
	if s.host != nil {
		s.host.Active.Add(-1)
		if failed {
			s.host.RqError.Add(1)
		}
		s.prevHost = s.host
		s.host = nil
	}
	if s.us != nil {
		s.unwatchAttempt()
		if s.pumping {
			s.us.(protocol.Aborter).Abort(protocol.ErrUpstreamReset)
		}
		s.stopPump()
		s.us.Close()
		s.us = nil
	}
	if s.conn != nil {
		s.conn.Host().Pool().Release(s.conn, false)
		s.conn = nil
	}
	s.resp.Reset()
}

// respond relays the response: headers, then body as it arrives.
func (s *Stream) respond() {
	resp := &s.resp
	cl := s.cluster
	s.status = resp.StatusCode()
	cl.Stats.CountStatus(s.status)
	s.upstreamServiceTime(resp)
	s.route.ApplyResponseHeaders(resp, s.req, s.varsFor())
	if s.encN > 0 {
		s.encodeHeaders(resp, s.us.EndStream())
		if r := s.fx.replace; r != nil {
			// An encoder replaced the upstream's answer.
			s.fx.replace = nil
			s.endAttempt(false)
			s.closeAfter = true
			s.fx.edit = r.edit
			s.encN = 0 // the reply is the encoders' own
			s.localReply(r.status, r.body, false)
			s.fx.edit = nil
			return
		}
	}
	s.finalizeResponseHeaders(resp)
	if s.upgrade && s.status == 101 {
		s.tunnel()
		return
	}
	end := s.us.EndStream()
	s.respStarted = true
	if !end {
		s.holdIfMore(s.ds, s.us) // the body at hand: one write for both
	}
	err := s.ds.WriteHeaders(resp, end)
	if err == nil && !end {
		err = s.relayBody()
	}
	s.endAttempt(err == nil)
	if err != nil {
		s.resetDownstream()
	}
}

func (s *Stream) relayBody() error {
	timed := !s.deadline.IsZero() || s.streamIdle() > 0 || s.perTryIdle() > 0
	for {
		if timed {
			s.us.SetDeadline(s.bodyDeadline())
		}
		data, err := s.us.ReadData()
		if s.anyEncData && (len(data) > 0 || err == io.EOF) {
			var ok bool
			if data, ok = s.filterResponseData(data, err); !ok {
				return errEncodeBuffer
			}
		}
		if len(data) > 0 {
			last := err == io.EOF && s.us.Trailers() == nil
			if !last {
				s.holdIfMore(s.ds, s.us) // more (or the trailers) at hand
			}
			if werr := s.ds.WriteData(data, last); werr != nil || last {
				return werr
			}
		}
		if err == io.EOF {
			if t := s.us.Trailers(); t != nil {
				return s.ds.WriteTrailers(t)
			}
			return s.ds.WriteData(nil, true)
		}
		if err != nil {
			s.countBodyFailure(err)
			return err
		}
	}
}

// countBodyFailure counts a timeout, or an upstream reset, that cut a
// response under way.
func (s *Stream) countBodyFailure(err error) {
	switch classify(err, false).Kind {
	case KindReset, KindResetBeforeHeaders, KindMalformed:
		s.cluster.Stats.RqRxReset.Inc()
		s.flags = "UR"
		return
	case KindTimeout:
	default:
		return
	}
	switch s.timer {
	case timerStreamIdle:
		s.cfg.Stats.RqIdleTimeout.Inc()
		s.flags = "SI"
	case timerPerTryIdle:
		s.cluster.Stats.RqPerTryIdleTimeout.Inc()
		s.flags = "UT"
	case timerRoute:
		s.cluster.Stats.RqTimeout.Inc()
		s.cfg.Stats.RqTimeout.Inc()
		s.flags = "UT"
	}
}

// endAttempt returns the connection to its pool after a relayed response.
func (s *Stream) endAttempt(ok bool) {
	h := s.host
	h.Active.Add(-1)
	s.unwatchAttempt()
	s.stopPump()
	reusable := s.us.Close() && ok
	s.us = nil
	if s.conn != nil {
		h.Pool().Release(s.conn, reusable)
		s.conn = nil
	}
	s.host = nil
	if ok {
		h.RqSuccess.Add(1)
	} else {
		h.RqError.Add(1)
	}
	s.cluster.Stats.RqTime.Observe(float64(time.Since(s.upStart).Microseconds()) / 1000)
}

// replyError answers a failed request with its local reply.
func (s *Stream) replyError(e *Error) {
	r := replyFor(e)
	if e.Kind == KindConnectFailure || e.Kind == KindResetBeforeHeaders || e.Kind == KindReset || e.Kind == KindMalformed {
		s.cluster.Stats.RqRxReset.Inc()
	}
	s.flags = r.flag
	s.localReply(r.status, r.body, r.overloaded)
}

// idempotent reports whether the request may be sent again after a
// connection failed under it, as Go's HTTP client decides: GET, HEAD,
// OPTIONS and TRACE, or a request with an Idempotency-Key.
func (s *Stream) idempotent() bool {
	switch string(s.req.Method()) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return s.req.Has("idempotency-key") || s.req.Has("x-idempotency-key")
}
