package proxy

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/filter"
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
	call, ok := cl.Begin()
	if !ok {
		s.replyError(&Error{Kind: KindOverflow, Source: Upstream})
		return
	}
	defer call.End()
	if len(s.route.Mirrors) > 0 && !s.upgrade && !s.gone.Load() {
		// After the primary's own circuit breaker: a copy never takes
		// the primary's slot. (Upgraded streams are tunnels: not
		// mirrored.)
		s.startMirrors()
	}
	s.upStart = time.Now()
	s.info.UpstreamStart = s.upStart
	if g := s.route.GRPCTimeout; g != nil && s.grpc {
		// (Timed from here as the route timeout; each attempt tells the
		// upstream what it has left.)
		s.deadline = time.Time{}
		if d := g.For(grpcTimeout(s.req)); d > 0 {
			s.deadline = s.upStart.Add(d)
		}
	} else {
		if s.route.Timeout > 0 {
			// From here, as Envoy's router times a request: the time
			// a filter held it does not count.
			s.deadline = s.upStart.Add(s.route.Timeout)
		}
		s.capByGRPCTimeout()
	}
	s.capByCallTimeout()
	// max_stream_duration: the route's, else the connection manager's.
	d := s.cfg.MaxStreamDuration
	if m := s.route.MaxStream; m != nil {
		if v, set := m.For(grpcTimeout(s.req)); set {
			d = v
		}
	}
	s.durAt = time.Time{}
	if d > 0 {
		s.durAt = s.start.Add(d)
	}
	if c, ok := s.ds.(protocol.Canceler); ok {
		c.OnCancel(s.cancelFn)
		defer c.OnCancel(nil)
	}
	policy := s.route.Retry
	retrying := false
	for {
		err := s.tryOnce()
		if retrying {
			// The retry's budget slot is held for its attempt only, which
			// is over whichever way it went.
			cl.Breaker.ReleaseRetry()
			retrying = false
		}
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
			s.flags |= accesslog.DownstreamConnectionTermination
			s.details = "downstream_remote_disconnect"
			s.resetDownstream()
			return
		}
		if err == nil && s.resp.StatusCode() == 101 && !s.upgrade {
			// A switch nobody asked for would leave the client tunnelling
			// bytes we still parse as requests.
			err = &protocol.MalformedError{Reason: "unsolicited 101 Switching Protocols"}
		}
		if err == nil {
			code := s.resp.StatusCode()
			s.try.Answered(s.outlierStatus(code))
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
		s.reportFailure(err)
		s.dropAttempt(true)
		var re *protocol.RequestError
		if errors.As(err, &re) {
			s.closeAfter = true
			s.details = detailsOf(re.Reason)
			if re == errMaxDuration {
				s.cfg.Stats.RqMaxDurationReached.Inc()
				s.flags |= accesslog.DurationTimeout
				s.details = "max_duration_timeout"
			}
			s.localReply(re.Status, re.Reason, false)
			return
		}
		e := s.classifyTimeout(classify(err, s.timer == timerPerTry || s.timer == timerPerTryIdle))
		if e.Kind == KindDownstreamReset {
			s.flags |= accesslog.DownstreamConnectionTermination
			s.details = "downstream_remote_disconnect"
			s.resetDownstream()
			return
		}
		if s.staleConn(e.Kind) {
			// The pooled connection died under us (the upstream closed it
			// unannounced): not the upstream's fault, and safe to send
			// again, on a new connection.
			s.safeRetries++
			s.attempt--
			s.cluster.Stats.RqStaleRetry.Inc()
			continue
		}
		if policy != nil && retryOnError(policy, e, s.reqSent) && s.mayRetry(policy) {
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
				s.flags |= accesslog.StreamIdleTimeout
				s.details = "stream_idle_timeout"
				s.closeAfter = true
				s.localReply(errStreamTimeout.Status, errStreamTimeout.Reason, false)
				return
			}
		}
		s.replyError(e)
		return
	}
}

// retryOnError applies retry_on to an error without a response; sent:
// the attempt had begun sending the request.
func retryOnError(p *router.RetryPolicy, e *Error, sent bool) bool {
	if !e.Retryable {
		return false
	}
	on := p.On
	if on&router.RetryResetBeforeRequest != 0 && !sent {
		switch e.Kind {
		case KindConnectFailure, KindResetBeforeHeaders, KindReset:
			return true
		}
	}
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
	if s.attempt > int(p.NumRetries) {
		s.flags |= accesslog.UpstreamRetryLimitExceeded
		return false
	}
	if s.pumping || !s.replayable {
		return false
	}
	if !s.deadline.IsZero() && time.Now().After(s.deadline) || !s.durAt.IsZero() && time.Now().After(s.durAt) {
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

// avoidTried is the previous_hosts retry host predicate: while h is a
// host this request tried, choose again, at most attempts times (the
// last choice stands); h is then remembered as tried.
func (s *Stream) avoidTried(h *upstream.Host, attempts int) *upstream.Host {
	for i := 0; i < attempts && slices.Contains(s.tried, h); i++ {
		s.hint.Random = s.hint.Random*0x5851f42d4c957f2d + 0x14057b7ef767814f
		if again := s.cluster.Pick(&s.hint); again != nil {
			h = again
		}
	}
	s.tried = append(s.tried, h)
	return h
}

// tryOnce is one attempt: choose a host, get a connection, send the
// request, receive the response headers.
func (s *Stream) tryOnce() error {
	s.attempt++
	s.reqSent = false
	s.hint = upstream.PickHint{Random: s.random + uint64(s.attempt)*0x9e3779b97f4a7c15, Avoid: s.prevHost,
		Local: s.cm.conn.RestoredLocalAddr(), Headers: s.req}
	h := s.cluster.Pick(&s.hint)
	if h == nil {
		return &Error{Kind: KindNoHealthy, Source: Upstream}
	}
	if p := s.route.Retry; p != nil && p.AvoidTried {
		h = s.avoidTried(h, p.HostSelectionAttempts)
	}
	s.host = h
	s.info.UpstreamHost = h.Addr
	if s.route.AutoHostRewrite && h.Hostname != "" {
		s.req.Set(protocol.Authority, h.Hostname)
	}
	s.setAttemptCount(s.req, true)
	if s.span != nil {
		s.startUpstreamSpan()
	}
	s.try = h.Begin()
	wait := time.Duration(0)
	s.timer = timerNone // the wait's bound, for a pending timeout's name
	if !s.deadline.IsZero() {
		s.timer = timerRoute
		if wait = time.Until(s.deadline); wait <= 0 {
			return &Error{Kind: KindTimeout, Source: Upstream, Err: upstream.ErrPendingTimeout}
		}
	}
	if !s.durAt.IsZero() {
		// The wait for a connection counts against max_stream_duration.
		left := time.Until(s.durAt)
		if left <= 0 {
			s.timer = timerMaxDuration
			return s.classifyTimeout(&Error{Kind: KindTimeout, Source: Upstream, Err: upstream.ErrPendingTimeout})
		}
		if wait == 0 || left < wait {
			wait = left
			s.timer = timerMaxDuration
		}
	}
	if s.route.GRPCTimeout != nil && s.grpc {
		s.tellGRPCTimeout(wait)
	}
	if err := s.openStream(h, wait); err != nil {
		return err
	}
	s.try.Connected()
	if !s.watchAttempt() {
		return protocol.ErrDownstreamReset
	}
	if s.relayContinue {
		if n, ok := s.us.(protocol.ContinueNotifier); ok {
			n.OnContinue(s.continueFn)
		}
	}
	s.us.SetDeadline(s.responseDeadline()) // bounds sending too
	s.reqSent = true
	if err := s.sendRequest(); err != nil {
		if err == errAnsweredFirst {
			// The upstream answered instead of 100 Continue: no body went,
			// and the client, still waiting, sends none either.
			return s.us.ReadHeaders(&s.resp)
		}
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
	codec, mux := s.cfg.upstreamFor(s.cluster, h, s.h2)
	pool := h.Pool()
	if alpn := s.alpnOverride(); alpn != nil && s.cfg.UpstreamCodec == nil {
		pool, mux = h.PoolsFor(alpn)
	}
	if codec.NewMux != nil {
		us, reused, err := mux.NewStream(s.cm.conn.Context(), wait)
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
	conn, err := pool.Acquire(s.cm.conn.Context(), wait, reuse)
	if errors.Is(err, upstream.ErrProtocolSwitched) {
		return s.openStream(h, wait) // now the host's protocol is h2
	}
	if err != nil {
		return err
	}
	s.conn = conn
	s.prevConnReused = conn.Reused
	if s.cfg.AccessLogs != nil {
		s.upLocal = conn.LocalAddr()
	}
	s.us = codec.NewClient(conn)
	return nil
}

// upstreamFor is the codec towards h and, when it multiplexes, the pool
// of its connections: the network filter's RPC codec when it has one,
// else the cluster's HTTP codec.
func (cfg *Config) upstreamFor(cl *upstream.Cluster, h *upstream.Host, h2 bool) (*protocol.Codec, *upstream.MuxPool) {
	if uc := cfg.UpstreamCodec; uc != nil {
		return uc, h.MuxFor(uc)
	}
	return cl.CodecForHost(h, h2), h.Mux()
}

// alpnOverride is the ALPN a filter asked for, nil without one.
func (s *Stream) alpnOverride() []string {
	if s.info.State == nil {
		return nil
	}
	v, _ := s.info.State[filter.StateApplicationProtocols].([]string)
	return v
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
	d, which = s.byMaxDuration(d, which)
	s.timer = which
	return d
}

// byMaxDuration is deadline d (of kind which) brought forward to the
// stream's max_stream_duration when that comes first.
func (s *Stream) byMaxDuration(d time.Time, which timerKind) (time.Time, timerKind) {
	if !s.durAt.IsZero() && (d.IsZero() || s.durAt.Before(d)) {
		return s.durAt, timerMaxDuration
	}
	return d, which
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
	d, which = s.byMaxDuration(d, which)
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
	timerMaxDuration // the route's max_stream_duration
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
	case timerMaxDuration:
		s.cfg.Stats.RqMaxDurationReached.Inc()
		return &Error{Kind: KindMaxDuration, Source: Upstream, Err: e.Err}
	case timerPerTryIdle:
		s.cluster.Stats.RqPerTryIdleTimeout.Inc()
	case timerPerTry:
		s.cluster.Stats.RqPerTryTimeout.Inc()
	}
	return e
}

// staleConn reports a failure that is the pooled connection's, died
// under the request (the upstream closed it unannounced): not the
// upstream's fault, and safe to send again on a new connection.
func (s *Stream) staleConn(k Kind) bool {
	return k == KindResetBeforeHeaders && s.prevConnReused && s.safeRetries < maxSafeRetries && !s.pumping && s.replayable && s.idempotent()
}

// reportFailure tells outlier detection of an attempt that failed before
// an answer, when the failure is the upstream's: a connection that
// failed or broke, no answer in time. (Overflow, the client leaving, a
// request error and a stale pooled connection are not.)
func (s *Stream) reportFailure(err error) {
	var re *protocol.RequestError
	if errors.As(err, &re) || errors.Is(err, errFilterReplied) || errors.Is(err, upstream.ErrPendingTimeout) ||
		s.timer == timerStreamIdle || s.timer == timerMaxDuration {
		// The request's own fault, or no stream on the host yet (waiting
		// for a connection is this proxy's limit, not the host's), or the
		// client's silence.
		return
	}
	switch k := classify(err, false).Kind; {
	case s.staleConn(k):
	case k == KindConnectFailure:
		s.try.Failed(upstream.FailConnect)
	case k == KindTimeout || k == KindPerTryTimeout:
		s.try.Failed(upstream.FailTimeout)
	case k == KindReset || k == KindResetBeforeHeaders || k == KindMalformed:
		s.try.Failed(upstream.FailReset)
	}
}

// outlierStatus is the status outlier detection judges an answer by: a
// gRPC call's grpc-status in the headers (a trailers-only answer) as
// its HTTP status, else the answer's status. (As in Envoy, a grpc-status
// in trailers is not judged.)
func (s *Stream) outlierStatus(code int) int {
	if !s.grpc || code >= 500 {
		return code
	}
	v, ok := s.resp.Get("grpc-status")
	if !ok {
		return code
	}
	g, err := strconv.Atoi(string(v))
	if err != nil {
		return code
	}
	return grpcHTTPStatus(g)
}

// dropAttempt closes the attempt's upstream stream; the connection is
// closed unless the response was read whole.
func (s *Stream) dropAttempt(failed bool) {
	if s.upSpan != nil {
		s.endUpstreamSpan(failed)
	}
	if s.host != nil {
		if failed {
			s.try.End(false)
		} else {
			s.try.Drop()
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
		s.conn.Pool().Release(s.conn, false)
		s.conn = nil
	}
	s.resp.Reset()
}

// endAttempt returns the connection to its pool after a relayed response.
func (s *Stream) endAttempt(ok bool) {
	s.try.End(ok)
	s.unwatchAttempt()
	s.stopPump()
	reusable := s.us.Close() && ok
	s.us = nil
	if s.conn != nil {
		s.conn.Pool().Release(s.conn, reusable)
		s.conn = nil
	}
	s.host = nil
	s.cluster.Stats.RqTime.Observe(float64(time.Since(s.upStart).Microseconds()) / 1000)
}

// replyError answers a failed request with its local reply.
func (s *Stream) replyError(e *Error) {
	r := replyFor(e)
	if e.Kind == KindConnectFailure || e.Kind == KindResetBeforeHeaders || e.Kind == KindReset || e.Kind == KindMalformed {
		s.cluster.Stats.RqRxReset.Inc()
	}
	s.flags |= r.flag
	s.details = r.details
	if e.Kind == KindConnectFailure && e.Err != nil && s.cfg.AccessLogs != nil {
		s.upFail = e.Err.Error()
	}
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
