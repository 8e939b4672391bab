// Package fault is envoy.filters.http.fault: it delays and aborts a
// fraction of requests, by config or by the request's own headers, to
// test how a system copes. A delay holds a timer, not a worker: the
// stream parks, and resumes when the timer fires.
//
// Supported: delay (fixed_delay, header_delay) and abort (http_status,
// grpc_status, header_abort) with their percentages; headers matchers,
// upstream_cluster, downstream_nodes, max_active_faults; the runtime
// keys (fault.http.* by default, or the *_runtime fields);
// disable_downstream_cluster_stats; response_rate_limit (fixed_limit or
// header_limit, in KiB/s: the engine paces the response body). Stats
// under http.<stat_prefix>.fault.: delays_injected, aborts_injected,
// response_rl_injected, faults_overflow, active_faults, and
// per downstream cluster (x-envoy-downstream-service-cluster)
// <cluster>.delays_injected and .aborts_injected.
package fault

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.http.fault"

func init() {
	filter.RegisterHTTP(Name, &faultv3.HTTPFault{}, func(bc *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		return build(bc, m.(*faultv3.HTTPFault))
	})
	// A route may carry its own fault config (the same type), as Envoy.
	filter.RegisterHTTPPerRoute(Name, &faultv3.HTTPFault{}, func(m proto.Message) (any, error) {
		return compile(m.(*faultv3.HTTPFault))
	})
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.http.fault.v3.HTTPFault": `delay abort upstream_cluster headers downstream_nodes max_active_faults
		delay_percent_runtime abort_percent_runtime delay_duration_runtime abort_http_status_runtime
		max_active_faults_runtime abort_grpc_status_runtime disable_downstream_cluster_stats
		response_rate_limit`,
	"envoy.extensions.filters.common.fault.v3.FaultRateLimit":            `fixed_limit header_limit percentage`,
	"envoy.extensions.filters.common.fault.v3.FaultRateLimit.FixedLimit": `limit_kbps`,
	"envoy.extensions.filters.common.fault.v3.FaultDelay":                `fixed_delay header_delay percentage`,
	"envoy.extensions.filters.http.fault.v3.FaultAbort":                  `http_status grpc_status header_abort percentage`,
})

// The request headers that control faults (header_delay, header_abort).
const (
	hdrDelay             = "x-envoy-fault-delay-request"
	hdrDelayPercent      = "x-envoy-fault-delay-request-percentage"
	hdrAbort             = "x-envoy-fault-abort-request"
	hdrAbortGRPC         = "x-envoy-fault-abort-grpc-request"
	hdrAbortPercent      = "x-envoy-fault-abort-request-percentage"
	hdrThroughput        = "x-envoy-fault-throughput-response"
	hdrThroughputPercent = "x-envoy-fault-throughput-response-percentage"
	keyRateLimitPercent  = "fault.http.rate_limit.response_percent"
	hdrDownstreamNode    = "x-envoy-downstream-service-node"
	hdrDownstreamCluster = "x-envoy-downstream-service-cluster"
)

// settings is a compiled HTTPFault.
type settings struct {
	delay, abort       bool
	fixedDelay         time.Duration
	headerDelay        bool
	delayPercent       *typev3.FractionalPercent
	httpStatus         int
	grpcStatus         int // -1: none
	headerAbort        bool
	abortPercent       *typev3.FractionalPercent
	upstreamCluster    string
	headers            []*router.HeaderMatcher
	nodes              map[string]bool
	maxActive          int64 // 0: no bound
	keyDelayPercent    string
	keyAbortPercent    string
	keyDelayMS         string
	keyHTTPStatus      string
	keyMaxActive       string
	keyGRPCStatus      string
	noDownstreamCStats bool
	// response_rate_limit: rateKiB (0 with headerRate: the header's).
	rateLimit   bool
	rateKiB     uint64
	headerRate  bool
	ratePercent *typev3.FractionalPercent
}

func compile(m *faultv3.HTTPFault) (*settings, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	s := &settings{grpcStatus: -1, upstreamCluster: m.GetUpstreamCluster(),
		keyDelayPercent:    or(m.GetDelayPercentRuntime(), "fault.http.delay.fixed_delay_percent"),
		keyAbortPercent:    or(m.GetAbortPercentRuntime(), "fault.http.abort.abort_percent"),
		keyDelayMS:         or(m.GetDelayDurationRuntime(), "fault.http.delay.fixed_duration_ms"),
		keyHTTPStatus:      or(m.GetAbortHttpStatusRuntime(), "fault.http.abort.http_status"),
		keyMaxActive:       or(m.GetMaxActiveFaultsRuntime(), "fault.http.max_active_faults"),
		keyGRPCStatus:      or(m.GetAbortGrpcStatusRuntime(), "fault.http.abort.grpc_status"),
		noDownstreamCStats: m.GetDisableDownstreamClusterStats()}
	if d := m.GetDelay(); d != nil {
		s.delay, s.delayPercent = true, pct(d.GetPercentage())
		switch x := d.GetFaultDelaySecifier().(type) {
		case *faultcommonv3.FaultDelay_FixedDelay:
			s.fixedDelay = x.FixedDelay.AsDuration()
		case *faultcommonv3.FaultDelay_HeaderDelay_:
			s.headerDelay = true
		default:
			return nil, config.At("delay", errors.New("fixed_delay or header_delay is required"))
		}
	}
	if a := m.GetAbort(); a != nil {
		s.abort, s.abortPercent = true, pct(a.GetPercentage())
		switch x := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			s.httpStatus = int(x.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			s.grpcStatus = int(x.GrpcStatus)
		case *faultv3.FaultAbort_HeaderAbort_:
			s.headerAbort = true
		default:
			return nil, config.At("abort", errors.New("http_status, grpc_status or header_abort is required"))
		}
	}
	if r := m.GetResponseRateLimit(); r != nil {
		s.rateLimit, s.ratePercent = true, pct(r.GetPercentage())
		switch x := r.GetLimitType().(type) {
		case *faultcommonv3.FaultRateLimit_FixedLimit_:
			s.rateKiB = x.FixedLimit.GetLimitKbps()
		case *faultcommonv3.FaultRateLimit_HeaderLimit_:
			s.headerRate = true
		default:
			return nil, config.At("response_rate_limit", errors.New("fixed_limit or header_limit is required"))
		}
	}
	for i, h := range m.GetHeaders() {
		hm, err := router.CompileHeaderMatcher(h, fmt.Sprintf("headers[%d]", i))
		if err != nil {
			return nil, err
		}
		s.headers = append(s.headers, hm)
	}
	if ns := m.GetDownstreamNodes(); len(ns) > 0 {
		s.nodes = map[string]bool{}
		for _, n := range ns {
			s.nodes[n] = true
		}
	}
	if v := m.GetMaxActiveFaults(); v != nil {
		s.maxActive = int64(v.GetValue())
		if s.maxActive == 0 {
			s.maxActive = -1 // explicitly zero: no fault at all
		}
	}
	return s, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func pct(p *typev3.FractionalPercent) *typev3.FractionalPercent {
	if p == nil {
		return &typev3.FractionalPercent{} // 0 %, as the unset message reads
	}
	return p
}

type factory struct {
	s       *settings
	rt      *config.Runtime
	active  *stats.Gauge
	delays  *stats.Counter
	aborts  *stats.Counter
	rateRL  *stats.Counter
	overflw *stats.Counter
	sc      *stats.Scope
	mu      sync.Mutex
	byDown  map[string][2]*stats.Counter
}

func build(bc *filter.BuildContext, m *faultv3.HTTPFault) (*factory, error) {
	s, err := compile(m)
	if err != nil {
		return nil, err
	}
	sc := bc.Stats.Scope("http", "envoy_http_conn_manager_prefix", bc.StatPrefix).Scope("fault", "", "")
	return &factory{s: s, rt: bc.Runtime, sc: sc, active: sc.Gauge("active_faults"), delays: sc.Counter("delays_injected"),
		aborts: sc.Counter("aborts_injected"), rateRL: sc.Counter("response_rl_injected"), overflw: sc.Counter("faults_overflow"), byDown: map[string][2]*stats.Counter{}}, nil
}

// New implements filter.HTTPFactory: the per-stream state comes from a
// pool and goes back at OnDestroy, the stream's last call.
func (f *factory) New() filter.StreamFilter {
	st := streamPool.Get().(*stream)
	st.f = f
	return st
}

var streamPool = sync.Pool{New: func() any { return new(stream) }}

// stream is one request's fault state.
type stream struct {
	f      *factory
	s      *settings
	timer  *time.Timer
	active bool
	abort  bool // decided when the fault began: abort after the delay
	down   string
	// The abort headers' values (header_abort), copied.
	abortHdr, abortGRPCHdr string
}

func (f *factory) runtime() *config.RuntimeSnapshot {
	if f.rt == nil {
		return nil
	}
	return f.rt.Snapshot()
}

// DecodeHeaders decides the request's faults.
func (st *stream) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	f := st.f
	s := f.s
	if pr, ok := cb.PerRoute().(*settings); ok {
		s = pr
	}
	st.s = s
	if !s.delay && !s.abort && !s.rateLimit || !st.applies(cb, h, s) {
		return filter.Continue
	}
	rt := f.runtime()
	delay, delayed := st.delayFor(rt, h, s)
	st.abort = st.abortFor(rt, h, s)
	rate := st.rateFor(rt, h, s)
	if !delayed && !st.abort && rate == 0 {
		return filter.Continue
	}
	// Only a fault about to be injected counts against the bound (as
	// Envoy's tryIncActiveFaults).
	if s.maxActive != 0 {
		max := s.maxActive
		if max < 0 {
			max = 0
		}
		if f.active.Value() >= int64(runtimeNum(rt, s.keyMaxActive, float64(max))) {
			f.overflw.Inc()
			return filter.Continue
		}
	}
	if v, ok := h.Get(hdrDownstreamCluster); ok && !s.noDownstreamCStats {
		st.down = string(v)
	}
	if st.abort && s.headerAbort {
		if v, ok := h.Get(hdrAbort); ok {
			st.abortHdr = string(v)
		}
		if v, ok := h.Get(hdrAbortGRPC); ok {
			st.abortGRPCHdr = string(v)
		}
	}
	st.active = true
	f.active.Inc()
	if rate > 0 {
		f.rateRL.Inc()
		cb.LimitResponseRate(int64(rate) * 1024)
	}
	if delayed {
		f.delays.Inc()
		f.down(st.down, 0)
		cb.Info().AddResponseFlag(accesslog.DelayInjected)
		k := cb.Continuation()
		st.timer = time.AfterFunc(delay, k.Continue)
		return filter.Stop
	}
	return st.OnResume(cb)
}

// OnResume aborts after the delay, if the request was chosen for both.
func (st *stream) OnResume(cb filter.Callbacks) filter.Status {
	if !st.abort {
		return filter.Continue
	}
	st.abort = false
	st.f.aborts.Inc()
	st.f.down(st.down, 1)
	cb.Info().AddResponseFlag(accesslog.FaultInjected)
	cb.Info().ResponseCodeDetails = "fault_filter_abort"
	status, grpc := st.statusFor()
	cb.SendLocalReply(status, "fault filter abort", func(h *protocol.Headers) {
		if grpc >= 0 && h.Has("grpc-status") {
			h.Set("grpc-status", strconv.Itoa(grpc))
		}
	})
	return filter.Stop
}

// OnDestroy ends the fault: the timer stops, the active count drops,
// and the state goes back to the pool.
func (st *stream) OnDestroy() {
	if st.timer != nil {
		st.timer.Stop()
	}
	if st.active {
		st.f.active.Dec()
	}
	*st = stream{}
	streamPool.Put(st)
}

// applies checks the request against the fault's scope.
func (st *stream) applies(cb filter.Callbacks, h *protocol.Headers, s *settings) bool {
	if s.upstreamCluster != "" && cb.ClusterName() != s.upstreamCluster {
		return false
	}
	for _, m := range s.headers {
		if !m.Matches(h) {
			return false
		}
	}
	if s.nodes != nil {
		v, ok := h.Get(hdrDownstreamNode)
		if !ok || !s.nodes[string(v)] {
			return false
		}
	}
	return true
}

// delayFor decides the delay: the configured or the header's duration,
// by the configured (or the header's, no higher) percentage.
func (st *stream) delayFor(rt *config.RuntimeSnapshot, h *protocol.Headers, s *settings) (time.Duration, bool) {
	if !s.delay {
		return 0, false
	}
	d := s.fixedDelay
	if e, ok := runtimeEntry(rt, s.keyDelayMS); ok {
		d = time.Duration(e) * time.Millisecond
	}
	pct := s.delayPercent
	if s.headerDelay {
		pct = headerPercent(h, hdrDelayPercent, s.delayPercent)
		v, ok := h.Get(hdrDelay)
		if !ok {
			return 0, false
		}
		ms, err := strconv.ParseUint(string(v), 10, 32)
		if err != nil {
			return 0, false
		}
		d = time.Duration(ms) * time.Millisecond
	}
	if d <= 0 || !chosen(rt, s.keyDelayPercent, pct) {
		return 0, false
	}
	return d, true
}

// rateFor decides the response rate limit in KiB/s (0: none): the
// configured or the header's limit, by the configured (or the header's,
// no higher) percentage, or the runtime's.
func (st *stream) rateFor(rt *config.RuntimeSnapshot, h *protocol.Headers, s *settings) uint64 {
	if !s.rateLimit {
		return 0
	}
	kib, pct := s.rateKiB, s.ratePercent
	if s.headerRate {
		v, ok := h.Get(hdrThroughput)
		if !ok {
			return 0
		}
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil || n == 0 {
			return 0
		}
		kib, pct = n, headerPercent(h, hdrThroughputPercent, s.ratePercent)
	}
	if kib == 0 || !chosen(rt, keyRateLimitPercent, pct) {
		return 0
	}
	return kib
}

// abortFor decides the abort, as delayFor.
func (st *stream) abortFor(rt *config.RuntimeSnapshot, h *protocol.Headers, s *settings) bool {
	if !s.abort {
		return false
	}
	pct := s.abortPercent
	if s.headerAbort {
		// Only a valid status asks for an abort (as Envoy).
		okHTTP, okGRPC := false, false
		if v, ok := h.Get(hdrAbort); ok {
			n, err := strconv.Atoi(string(v))
			okHTTP = err == nil && n >= 200 && n < 600
		}
		if v, ok := h.Get(hdrAbortGRPC); ok {
			n, err := strconv.Atoi(string(v))
			okGRPC = err == nil && n >= 0
		}
		if !okHTTP && !okGRPC {
			return false
		}
		pct = headerPercent(h, hdrAbortPercent, s.abortPercent)
	}
	return chosen(rt, s.keyAbortPercent, pct)
}

// statusFor is the abort's HTTP status and gRPC status (-1: none): the
// header's for header_abort (a bad one: no abort status, 503 as Envoy
// falls back), else the runtime's or the configured.
func (st *stream) statusFor() (int, int) {
	s := st.s
	rt := st.f.runtime()
	grpc := s.grpcStatus
	status := s.httpStatus
	if rt != nil {
		if status != 0 {
			status = int(runtimeNum(rt, s.keyHTTPStatus, float64(status)))
		}
		if grpc >= 0 {
			grpc = int(runtimeNum(rt, s.keyGRPCStatus, float64(grpc)))
		}
	}
	if s.headerAbort {
		status, grpc = 0, -1
		if n, err := strconv.Atoi(st.abortGRPCHdr); err == nil && n >= 0 {
			grpc = n
		}
		if n, err := strconv.Atoi(st.abortHdr); err == nil && n >= 200 && n < 600 {
			status = n
		}
	}
	if status == 0 {
		// A gRPC abort: gRPC requests get a trailers-only answer with the
		// status (the local reply's grpc-status is replaced); others 503.
		status = 503
	}
	return status, grpc
}

// headerPercent is the percentage a request header asks for, with the
// configured denominator, never above the configured percentage; the
// configured one without the header.
func headerPercent(h *protocol.Headers, name string, cfg *typev3.FractionalPercent) *typev3.FractionalPercent {
	v, ok := h.Get(name)
	if !ok {
		return cfg
	}
	n, err := strconv.ParseUint(string(v), 10, 32)
	if err != nil || uint32(n) > cfg.GetNumerator() {
		return cfg
	}
	return &typev3.FractionalPercent{Numerator: uint32(n), Denominator: cfg.GetDenominator()}
}

var noRuntime = &config.RuntimeSnapshot{}

func chosen(rt *config.RuntimeSnapshot, key string, p *typev3.FractionalPercent) bool {
	if rt == nil {
		rt, key = noRuntime, ""
	}
	return rt.FeatureEnabled(key, p, rand.Uint64())
}

// runtimeEntry is the runtime's number for key, when it has one.
func runtimeEntry(rt *config.RuntimeSnapshot, key string) (float64, bool) {
	if rt == nil {
		return 0, false
	}
	if e, ok := rt.Get(key); ok && e.IsNum && e.Num >= 0 {
		return e.Num, true
	}
	return 0, false
}

func runtimeNum(rt *config.RuntimeSnapshot, key string, def float64) float64 {
	if rt == nil {
		return def
	}
	if e, ok := rt.Get(key); ok && e.IsNum && e.Num >= 0 {
		return e.Num
	}
	return def
}

// down counts a fault under its downstream cluster (0: delay, 1: abort).
func (f *factory) down(cluster string, which int) {
	if cluster == "" {
		return
	}
	f.mu.Lock()
	c, ok := f.byDown[cluster]
	if !ok && len(f.byDown) < 1000 {
		sc := f.sc.Scope(cluster, "", "")
		c = [2]*stats.Counter{sc.Counter("delays_injected"), sc.Counter("aborts_injected")}
		f.byDown[cluster] = c
	}
	f.mu.Unlock()
	if c[which] != nil {
		c[which].Inc()
	}
}
