// Package localratelimit is envoy.filters.http.local_ratelimit: a token
// bucket per filter (or per route, with a per-route config) that answers
// 429 (or the configured status) to the requests it has no token for.
//
// Supported: token_bucket, status, filter_enabled and filter_enforced
// (runtime fractional percents: unset is 0 %, as Envoy, so both must be
// set to limit), enable_x_ratelimit_headers (DRAFT_VERSION_03:
// x-ratelimit-limit, -remaining, -reset on every response the filter
// saw), rate_limited_as_resource_exhausted (gRPC calls get
// RESOURCE_EXHAUSTED instead of UNAVAILABLE), per-route config. Stats
// under <stat_prefix>.http_local_rate_limit.: enabled, enforced,
// rate_limited, ok. The rest (descriptors, per-connection buckets,
// headers to add, ...) is refused with its path.
package localratelimit

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/tokenbucket"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.http.local_ratelimit"

func init() {
	filter.RegisterHTTP(Name, &lrlv3.LocalRateLimit{}, func(bc *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		s, err := compile(m.(*lrlv3.LocalRateLimit))
		if err != nil {
			return nil, err
		}
		f := &factory{sc: bc.Stats, rt: bc.Runtime}
		f.l = f.limiterFor(s)
		return f, nil
	})
	// A route's own config: its own bucket and stats, made when a request
	// first takes the route.
	filter.RegisterHTTPPerRoute(Name, &lrlv3.LocalRateLimit{}, func(m proto.Message) (any, error) {
		return compile(m.(*lrlv3.LocalRateLimit))
	})
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit": `stat_prefix status token_bucket filter_enabled
		filter_enforced enable_x_ratelimit_headers rate_limited_as_resource_exhausted`,
})

// settings is a compiled LocalRateLimit.
type settings struct {
	statPrefix        string
	status            int
	enabled, enforced *corev3.RuntimeFractionalPercent
	xHeaders          bool
	exhausted         bool
	bucket            tokenbucket.Spec
}

func compile(m *lrlv3.LocalRateLimit) (*settings, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	spec, err := tokenbucket.FromProto(m.GetTokenBucket())
	if fe, ok := err.(*tokenbucket.FieldError); ok {
		return nil, config.At(fe.Field, fe.Err)
	}
	s := &settings{statPrefix: m.GetStatPrefix(), status: 429,
		xHeaders:  m.GetEnableXRatelimitHeaders() == ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		exhausted: m.GetRateLimitedAsResourceExhausted(), enabled: m.GetFilterEnabled(), enforced: m.GetFilterEnforced(),
		bucket: spec}
	if c := m.GetStatus().GetCode(); c != 0 {
		if c < 400 || c > 599 {
			return nil, config.At("status", errors.New("must be a 4xx or 5xx code"))
		}
		s.status = int(c)
	}
	return s, nil
}

// limiter is a bucket with its stats.
type limiter struct {
	s *settings
	*tokenbucket.Bucket
	stEnabled, stEnf *stats.Counter
	stLimited, stOK  *stats.Counter
}

type factory struct {
	l  *limiter
	sc *stats.Scope
	rt *config.Runtime
	// routes are the buckets of the routes' own configs.
	routes sync.Map // *settings → *limiter
}

// limiterFor makes the bucket (full) and the stats of s.
func (f *factory) limiterFor(s *settings) *limiter {
	sc := f.sc.Scope(s.statPrefix+".http_local_rate_limit", "", "")
	return &limiter{s: s, Bucket: tokenbucket.New(s.bucket), stEnabled: sc.Counter("enabled"), stEnf: sc.Counter("enforced"),
		stLimited: sc.Counter("rate_limited"), stOK: sc.Counter("ok")}
}

// New implements filter.HTTPFactory: the per-stream state comes from a
// pool and goes back at OnDestroy.
func (f *factory) New() filter.StreamFilter {
	st := streamPool.Get().(*stream)
	st.f = f
	return st
}

var streamPool = sync.Pool{New: func() any { return new(stream) }}

// OnDestroy returns the state to the pool.
func (st *stream) OnDestroy() {
	*st = stream{}
	streamPool.Put(st)
}

type stream struct {
	f         *factory
	l         *limiter
	remaining int64
	reset     time.Duration
	counted   bool
}

// on is a RuntimeFractionalPercent's answer (unset: 0 %).
func on(snap *config.RuntimeSnapshot, p *corev3.RuntimeFractionalPercent) bool {
	if p == nil {
		return false
	}
	key := p.GetRuntimeKey()
	if snap == nil {
		snap, key = noRuntime, ""
	}
	return snap.FeatureEnabled(key, p.GetDefaultValue(), rand.Uint64())
}

var noRuntime = &config.RuntimeSnapshot{}

func (st *stream) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	f := st.f
	l := f.l
	if pr, ok := cb.PerRoute().(*settings); ok {
		v, ok := f.routes.Load(pr)
		if !ok {
			v, _ = f.routes.LoadOrStore(pr, f.limiterFor(pr))
		}
		l = v.(*limiter)
	}
	var snap *config.RuntimeSnapshot
	if f.rt != nil {
		snap = f.rt.Snapshot()
	}
	if !on(snap, l.s.enabled) {
		return filter.Continue
	}
	l.stEnabled.Inc()
	ok, left, reset := l.Take()
	st.l, st.remaining, st.reset, st.counted = l, left, reset, true
	if ok {
		l.stOK.Inc()
		return filter.Continue
	}
	l.stLimited.Inc()
	if !on(snap, l.s.enforced) {
		return filter.Continue
	}
	l.stEnf.Inc()
	cb.Info().AddResponseFlag(accesslog.RateLimited)
	cb.Info().ResponseCodeDetails = "local_rate_limited"
	cb.SendLocalReply(l.s.status, "local_rate_limited", func(h *protocol.Headers) {
		h.Set("x-envoy-ratelimited", "true")
		if l.s.exhausted && h.Has("grpc-status") {
			h.Set("grpc-status", "8") // RESOURCE_EXHAUSTED
		}
		st.EncodeHeaders(nil, h, true) // its own reply carries the headers too
	})
	return filter.Stop
}

// EncodeHeaders adds the x-ratelimit headers.
func (st *stream) EncodeHeaders(_ filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	if st.counted && st.l.s.xHeaders {
		h.Set("x-ratelimit-limit", strconv.FormatInt(st.l.s.bucket.Max, 10))
		h.Set("x-ratelimit-remaining", strconv.FormatInt(st.remaining, 10))
		h.Set("x-ratelimit-reset", strconv.FormatInt(int64((st.reset+time.Second-1)/time.Second), 10))
	}
	return filter.Continue
}
