package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/tracelog"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/upstream"
)

// Stream is one request and its response: the typed per-request state that
// every phase receives. Streams are pooled; a Stream is owned by the one
// worker that runs it.
type Stream struct {
	cm  *connManager
	cfg *Config
	ds  protocol.ServerStream
	req *protocol.Headers

	info    filter.StreamInfo
	vars    router.Vars
	route   *router.Route
	cluster *upstream.Cluster

	// The filter chain (filters.go): the next decoder, how many filters'
	// encoders apply, the route cache, parking. fx holds what has
	// pointers, made once per pooled Stream when a chain is used: a
	// Stream without filters resets no more pointers per request than
	// before the filters came.
	fx          *chainState
	fi          int
	encN        int
	anyData     bool // a filter watches the request body or trailers
	anyEncData  bool // a filter watches the response body or trailers
	routeCached bool
	routed      bool          // routeRequest chose the route: it stays
	demanded    bool          // VHDS was asked for this request's host
	table       *router.Table // the table the cached route came from
	started     bool
	parked      bool // the cancel hook is set for a parked stream
	replied     bool // a filter sent a local reply
	encoding    bool
	inData      bool
	park        *parkCtl

	// upstream attempt state
	host           *upstream.Host
	try            upstream.Attempt // host's counters for this attempt
	prevHost       *upstream.Host
	tried          []*upstream.Host // hosts tried (with the previous_hosts predicate)
	conn           *upstream.Conn
	us             protocol.ClientStream
	attempt        int
	safeRetries    int
	prevConnReused bool
	// connChecked: a pooled connection was probed before this attempt.
	connChecked bool
	hint        upstream.PickHint

	// request body kept for replay on retry
	body       []byte
	bodyDone   bool
	replayable bool
	reqTrailer *protocol.Headers

	resp        protocol.Headers
	status      int
	exception   bool // an RPC reply carried an application exception
	respStarted bool
	closeAfter  bool
	// moved: the stream's tunnel moved to the next process (tunnelmove.go).
	moved bool
	// span is a traced request's span, upSpan its upstream attempt's
	// (tracer.go).
	span, upSpan Span
	// spanHost is the request's host when its span began, on an
	// OUTBOUND listener (the span's name, "egress HOST").
	spanHost string
	h2       bool // the downstream speaks HTTP/2
	grpc     bool // the request is a gRPC call
	// pumping: the request body streams on a goroutine until pumpDone.
	pumping  bool
	pumpDone chan struct{}
	sentEnd  bool // this attempt's request end went upstream with its last data
	upgrade  bool
	// relayContinue: the client waits for the upstream's 100 Continue
	// (proxy_100_continue); continueFn relays it (kept across requests).
	relayContinue bool
	continueFn    func()

	start    time.Time
	upStart  time.Time
	deadline time.Time // route timeout, set once the request is sent
	// durAt ends the stream: the route's max_stream_duration from the
	// stream's start (zero: none).
	durAt time.Time
	// reqSent: the current attempt began sending its request
	// (reset-before-request retries only failures before that).
	reqSent bool
	timer   timerKind // the deadline in effect on the upstream stream
	// flags are Envoy's response flags of the answer; details its
	// response code details (access logs).
	flags   accesslog.Flags
	details string
	// For access logs (set only when the manager has them): when the
	// request ended and the response began, the upstream connection's
	// local address, why the upstream connection failed, the response
	// trailers (a copy), and the entry, kept across pooled uses.
	reqAt, respAt time.Time
	upLocal       net.Addr
	upFail        string
	trailers      protocol.Headers
	hasTrailers   bool
	logEntry      *accesslog.Entry
	random        uint64
	scratch       []byte

	bodyTimer *time.Timer
	// mirrors are the request's shadow copies (mirror.go), nil mostly.
	mirrors []*shadow
	// respRate bounds the response body's bytes per second (a filter's
	// LimitResponseRate; 0: none).
	respRate int64
	pace     *pacer

	// The client leaving (protocol.Canceler) cancels the upstream attempt
	// at once: gone is set, and abortUp, the attempt's stream, is aborted
	// under abortMu. cancelFn is clientGone, made once per pooled Stream.
	gone     atomic.Bool
	abortMu  sync.Mutex
	abortUp  protocol.Cancelable
	cancelFn func()
}

var streamPool = sync.Pool{New: func() any { return new(Stream) }}

func newStream(cm *connManager, ds protocol.ServerStream) *Stream {
	s := streamPool.Get().(*Stream)
	s.cm, s.cfg, s.ds = cm, cm.cfg, ds
	s.req = ds.Request()
	// The request's time starts as it arrives, before it waits for a
	// worker: timeouts, downstream_rq_time and access logs count that
	// wait, as Envoy's do.
	s.start = time.Now()
	if s.cancelFn == nil {
		s.cancelFn = s.clientGone
		s.park = &parkCtl{s: s}
	}
	return s
}

func (s *Stream) release() {
	if fx := s.fx; fx != nil && len(fx.chain) > 0 {
		fx.reset()
	}
	if s.hasTrailers {
		s.trailers.Reset()
	}
	*s = Stream{resp: s.resp, trailers: s.trailers, scratch: s.scratch[:0], tried: clearHosts(s.tried), body: s.body[:0], cancelFn: s.cancelFn, park: s.park, fx: s.fx,
		logEntry: s.logEntry, continueFn: s.continueFn, info: filter.StreamInfo{Metadata: s.info.Metadata}}
	// A new generation: a filter's late Continue finds nothing to resume.
	s.park.word.Store((s.park.gen() + 1) << parkShift)
	s.resp.Reset()
	streamPool.Put(s)
}

// Run is the request's life on its worker (network.Runner); a stream a
// filter parked runs again from where it stopped.
func (s *Stream) Run() {
	if s.started {
		s.unwatchPark()
		s.stopParkTimer()
		if s.park.timedOut() {
			// A filter held the request past its time: 408, as Envoy's
			// request timeout answers.
			s.fx.resumeHook = nil
			s.cfg.Stats.RqTimeout.Inc()
			s.closeAfter = true
			s.details = "request_overall_timeout"
			s.localReply(408, "request timeout", false)
			s.finish()
			return
		}
		s.resumeDecode()
		return
	}
	s.started = true
	s.run()
}

// run is the request's life, phase by phase (docs/life-of-a-request.md).
func (s *Stream) run() {
	s.begin()
	if !s.decodeHeaders() {
		s.finish()
		return
	}
	if len(s.cfg.Filters) > 0 {
		s.newFilters()
		// With on-demand VHDS, the virtual host is asked for before the
		// filters run, so they see the route the request takes (a filter
		// a route enables included).
		if s.cachedRoute() == nil && s.table != nil && s.cfg.VirtualHosts != nil {
			s.demanded = true
			if r := s.demandVirtualHost(s.table); r != nil {
				s.route = r
			}
		}
	}
	s.resumeDecode()
}

// resumeDecode runs the decoders from the next one on, then routes and
// forwards; a filter that stops parks the stream here.
func (s *Stream) resumeDecode() {
	if s.gone.Load() {
		// The client left while a filter held the request.
		s.flags |= accesslog.DownstreamConnectionTermination
		s.details = "downstream_remote_disconnect"
		s.resetDownstream()
		s.finish()
		return
	}
	if s.fx != nil && len(s.fx.chain) > 0 {
		switch s.decodeFilters() {
		case filtersParked:
			return // the worker leaves; Continue brings the stream back
		case filtersReplied:
			s.finish()
			return
		case filtersGone:
			s.flags |= accesslog.DownstreamConnectionTermination
			s.details = "downstream_remote_disconnect"
			s.details = "downstream_remote_disconnect"
			s.resetDownstream()
			s.finish()
			return
		}
	}
	if s.routeRequest() {
		s.forward()
	}
	s.finish()
}

// begin: counters and per-request values.
func (s *Stream) begin() {
	st := s.cfg.Stats
	st.RqTotal.Inc()
	switch {
	case s.cfg.RPC:
	case s.h2:
		st.RqHTTP2Total.Inc()
	default:
		st.RqHTTP1Total.Inc()
	}
	st.RqActive.Inc()
	s.random = rand.Uint64()
	s.replayable = true
	// The dynamic metadata's maps are kept, emptied, from the stream's
	// last request (nothing reads them once it ended): a filter that sets
	// metadata on every request (RBAC's shadow result) allocates nothing.
	md := s.info.Metadata
	for _, m := range md {
		clear(m)
	}
	s.info = filter.StreamInfo{RemoteAddr: s.cm.conn.RemoteAddr(), LocalAddr: s.cm.conn.LocalAddr(), Protocol: s.ds.Protocol(),
		Conn: s.cm.conn, StartTime: s.start, Metadata: md}
	if s.cfg.AccessLogs != nil && s.ds.HeadersOnly() {
		s.reqAt = s.start
	}
}

// routeRequest matches the route and answers what needs no upstream: no
// route, a direct response, a redirect, a missing cluster.
func (s *Stream) routeRequest() bool {
	st := s.cfg.Stats
	r := s.cachedRoute()
	if t := s.table; r == nil && t != nil && s.cfg.VirtualHosts != nil && !s.demanded {
		r = s.demandVirtualHost(t)
	}
	if r == nil {
		st.NoRoute.Inc()
		s.flags |= accesslog.NoRouteFound
		s.details = "route_not_found"
		s.localReply(404, "route not found", false)
		return false
	}
	s.route, s.routed = r, true
	s.info.RouteName = r.Name
	switch {
	case r.DirectResponse != nil:
		st.DirectResponse.Inc()
		s.details = "direct_response"
		s.directResponse(r.DirectResponse)
		return false
	case r.Redirect != nil:
		st.Redirect.Inc()
		s.details = "direct_response"
		s.redirect(r.Redirect)
		return false
	}
	name := r.PickCluster(s.random)
	cl, ok := s.cfg.Clusters.Get(name)
	if !ok {
		cl, ok = s.awaitCluster(name)
	}
	if !ok {
		st.NoCluster.Inc()
		s.flags |= accesslog.NoClusterFound
		s.details = "cluster_not_found"
		code := r.ClusterNotFoundStatus
		if code == 0 {
			code = 503
		}
		s.localReply(code, "cluster not found", false)
		return false
	}
	s.cluster = cl
	s.info.ClusterName = name
	s.rewrite(r)
	r.ApplyRequestHeaders(s.req, s.varsFor())
	return true
}

// demandVirtualHost asks VHDS for the virtual host of the request's host
// (the on_demand filter) and routes the request again once the answer
// has been applied. The wait is bounded by the request timeout (15 s
// when there is none) and ends when the client leaves.
func (s *Stream) demandVirtualHost(matched *router.Table) *router.Route {
	host, ok := onDemandHost(s.req.Host())
	if !ok {
		return nil
	}
	done, cancel, ok := s.cfg.VirtualHosts.Demand(host)
	if !ok {
		// Nothing to wait for; an answer may have come since the match.
		if tb := s.cfg.Routes.Load(); tb != nil && tb != matched {
			return tb.MatchRandom(s.req, s.random)
		}
		return nil
	}
	defer cancel()
	max := s.cfg.RequestTimeout
	if max <= 0 {
		max = router.DefaultTimeout
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		return nil
	case <-s.cm.conn.Context().Done():
		return nil
	}
	if tb := s.cfg.Routes.Load(); tb != nil {
		return tb.MatchRandom(s.req, s.random)
	}
	return nil
}

// onDemandHost is the host a request asks VHDS for, lowercase; ok is
// false for a host that cannot name a virtual host (empty, too long, or
// with a byte a host and port cannot have: a '/' would change the
// resource's namespace).
func onDemandHost(h []byte) (string, bool) {
	if len(h) == 0 || len(h) > 255 {
		return "", false
	}
	b := make([]byte, len(h))
	for i, c := range h {
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_', c == ':', c == '[', c == ']':
		default:
			return "", false
		}
		b[i] = c
	}
	return string(b), true
}

// awaitCluster waits for a cluster that is warming: an update may move a
// route to a cluster it adds before the cluster's endpoints arrive. The
// wait is bounded by the route timeout (15 s when it has none) and ends
// when the client leaves.
func (s *Stream) awaitCluster(name string) (*upstream.Cluster, bool) {
	w, ok := s.cfg.Clusters.(interface {
		Await(ctx context.Context, name string, max time.Duration) (*upstream.Cluster, bool)
	})
	if !ok {
		return nil, false
	}
	max := s.route.Timeout
	if max <= 0 {
		max = router.DefaultTimeout
	}
	return w.Await(s.cm.conn.Context(), name, max)
}

func (s *Stream) varsFor() *router.Vars {
	if s.vars.RemoteAddr == "" {
		s.vars = s.cm.vars
		s.vars.Protocol = s.info.Protocol
	}
	return &s.vars
}

func (s *Stream) rewrite(r *router.Route) {
	if r.RewritesPath() {
		s.scratch = r.RewritePath(s.scratch[:0], s.req.Path())
		if !s.req.Has("x-envoy-original-path") {
			s.req.SetBytes("x-envoy-original-path", s.req.Path())
		}
		s.req.SetBytes(protocol.Path, s.scratch)
	}
	if host, ok := r.RewriteHost(); ok {
		if r.AppendXForwardedHost {
			s.req.AddString("x-forwarded-host", string(s.req.Host()))
		}
		s.req.Set(protocol.Authority, host)
	}
}

func (s *Stream) directResponse(d *router.DirectResponse) {
	h := s.startReply(d.Status)
	s.route.ApplyResponseHeaders(h, s.req, s.varsFor())
	if len(d.Body) > 0 && !h.Has("content-type") {
		h.Set("content-type", "text/plain")
	}
	s.sendReply(h, d.Body)
}

func (s *Stream) redirect(rd *router.Redirect) {
	h := s.startReply(rd.Status)
	h.Set("location", rd.Location(s.req))
	s.route.ApplyResponseHeaders(h, s.req, s.varsFor())
	s.sendReply(h, nil)
}

// localReply answers with a reply the proxy makes itself. After response
// headers went out, it can only reset the stream.
func (s *Stream) localReply(code int, body string, overloaded bool) {
	if s.grpc {
		s.grpcReply(code, body)
		return
	}
	h := s.startReply(code)
	if overloaded {
		h.Set("x-envoy-overloaded", "true")
	}
	if body != "" {
		h.Set("content-type", "text/plain")
		body += "\n"
	}
	s.sendReply(h, []byte(body))
}

func (s *Stream) startReply(code int) *protocol.Headers {
	h := &s.resp
	h.Reset()
	s.scratch = strconv.AppendInt(s.scratch[:0], int64(code), 10)
	h.SetBytes(protocol.Status, s.scratch)
	return h
}

func (s *Stream) sendReply(h *protocol.Headers, body []byte) {
	if s.respStarted {
		s.resetDownstream()
		return
	}
	if s.fx != nil && s.fx.edit != nil {
		s.fx.edit(h)
	}
	s.status = h.StatusCode()
	s.scratch = strconv.AppendInt(s.scratch[:0], int64(len(body)), 10)
	h.SetBytes("content-length", s.scratch)
	if s.encN > 0 {
		s.encodeHeaders(h, len(body) == 0)
		if s.anyEncData && len(body) > 0 {
			// The reply's body passes the encoders too (a copy: a direct
			// response's body is the route's); a length they change is
			// told.
			n := len(body)
			if b, ok := s.encodeData(append([]byte(nil), body...), true, false); ok {
				body = b
			}
			if len(body) != n && h.Has("content-length") {
				s.scratch = strconv.AppendInt(s.scratch[:0], int64(len(body)), 10)
				h.SetBytes("content-length", s.scratch)
			}
		}
	}
	s.finalizeResponseHeaders(h)
	s.respStarted = true
	if err := s.ds.WriteHeaders(h, len(body) == 0); err != nil {
		s.resetDownstream()
		return
	}
	if len(body) > 0 {
		if err := s.ds.WriteData(body, true); err != nil {
			s.resetDownstream()
			return
		}
		s.info.BytesSent += uint64(len(body))
	}
}

func (s *Stream) resetDownstream() {
	s.cfg.Stats.RqRxReset.Inc()
	s.closeAfter = true
	if s.status == 0 {
		s.status = 499
	}
}

// finish: counters, the connection's bookkeeping, and the stream back to
// its pool.
func (s *Stream) finish() {
	st := s.cfg.Stats
	if c := s.status / 100; c >= 1 && c <= 5 {
		st.RqClass[c].Inc()
	}
	now := time.Now()
	took := now.Sub(s.start)
	st.RqTime.Observe(float64(took.Microseconds()) / 1000)
	if o := s.cfg.Observer; o != nil {
		o.StreamDone(s.req, s.status, s.exception, took)
	}
	st.RqActive.Dec()
	st.RqCompleted.Inc()
	s.info.ResponseFlags |= s.flags
	if s.fx != nil && len(s.fx.chain) > 0 {
		s.destroyFilters()
	}
	if s.mirrors != nil {
		s.detachMirrors()
	}
	if tracelog.On(s.cfg.Log) {
		s.traceRequest()
	}
	if s.cfg.AccessLogs != nil && !s.moved { // a moved tunnel is logged where it ends
		s.logAccess(now)
	}
	if s.span != nil {
		s.finishSpan(now)
	}
	s.ds.Finish(s.closeAfter)
	s.cm.streamDone()
	s.release()
}

// traceRequest logs the finished request at trace level.
func (s *Stream) traceRequest() {
	upstream := "-"
	if s.host != nil {
		upstream = s.host.Addr
	}
	flags := s.info.ResponseFlags.String()
	if flags == "" {
		flags = "-"
	}
	tracelog.Log(s.cfg.Log, "request", "method", string(s.req.Method()), "path", string(s.req.Path()),
		"protocol", s.ds.Protocol(), "status", s.status, "flags", flags, "upstream", upstream, "remote", s.info.RemoteAddr,
		"duration", time.Since(s.start))
}

// readBody reads the next piece of the request body, keeping a copy for
// replay while it fits the retry buffer.
func (s *Stream) readBody() ([]byte, error) {
	data, err := s.ds.ReadData()
	s.info.BytesReceived += uint64(len(data))
	if s.anyData && (len(data) > 0 || err == io.EOF) {
		var ok bool
		if data, ok = s.filterRequestData(data, err); !ok {
			return nil, errFilterReplied
		}
	}
	if len(data) > 0 && s.replayable {
		if len(s.body)+len(data) <= s.cfg.RetryBufferLimit {
			s.body = append(s.body, data...)
		} else {
			s.replayable = false
		}
	}
	if err == io.EOF {
		s.bodyDone = true
		if s.cfg.AccessLogs != nil {
			s.reqAt = time.Now()
		}
		s.reqTrailer = s.ds.RequestTrailers()
	}
	if s.mirrors != nil && (err == nil && len(data) > 0 || err == io.EOF) {
		s.mirrorBody(data, err == io.EOF, s.reqTrailer)
	}
	return data, err
}

// filterRequestData passes a piece of request body (and, at its end, the
// trailers) through the data filters.
func (s *Stream) filterRequestData(data []byte, err error) ([]byte, bool) {
	t := s.ds.RequestTrailers()
	end := err == io.EOF && t == nil
	out, ok := s.decodeData(data, end, false)
	if ok && err == io.EOF && t != nil {
		// Trailers end the body: what buffering filters kept goes on
		// through the filters after them, then the trailers.
		var rest []byte
		if rest, ok = s.decodeData(nil, false, true); ok && len(rest) > 0 {
			out = append(out[:len(out):len(out)], rest...)
		}
		if ok {
			ok = s.decodeTrailers(t)
		}
	}
	return out, ok
}

// clientGone is the stream's protocol.Canceler function: the client reset
// the stream or closed the connection. It runs under the codec's lock:
// it only marks the stream and aborts the upstream attempt, whose worker
// then gives up at once.
func (s *Stream) clientGone() {
	s.gone.Store(true)
	s.abortMu.Lock()
	if s.abortUp != nil {
		s.abortUp.Cancel(protocol.ErrDownstreamReset)
		s.cluster.Stats.RqTxReset.Inc()
	}
	s.abortMu.Unlock()
	s.park.clientLeft() // a stream a filter holds ends now
}

// watchAttempt makes the attempt's upstream stream abortable by the
// client leaving; it reports false when the client has left already.
func (s *Stream) watchAttempt() bool {
	s.abortMu.Lock()
	s.abortUp, _ = s.us.(protocol.Cancelable)
	s.abortMu.Unlock()
	return !s.gone.Load()
}

// unwatchAttempt ends watchAttempt before the stream is closed.
func (s *Stream) unwatchAttempt() {
	s.abortMu.Lock()
	s.abortUp = nil
	s.abortMu.Unlock()
}

// clearHosts empties a reused slice without keeping its hosts alive.
func clearHosts(hs []*upstream.Host) []*upstream.Host {
	clear(hs)
	return hs[:0]
}
