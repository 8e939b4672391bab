// Package grpcstats is envoy.filters.http.grpc_stats: it counts gRPC
// calls and their messages per upstream cluster, as Envoy's filter does.
//
// For a request whose content-type is gRPC (application/grpc, or
// application/grpc-web as protocol grpc-web) and whose path names a
// service and method (/<service>/<method>), on a route with a cluster:
//
//   - cluster.<name>.<protocol>[.<service>.<method>].<grpc-status>,
//     .success (status 0) or .failure, and .total, when grpc-status comes
//     (in the trailers, or in a trailers-only answer);
//   - cluster.<name>.grpc[.<service>.<method>].request_message_count and
//     response_message_count, by the 5-byte gRPC frame headers of the
//     bodies;
//   - with enable_upstream_stats, cluster.<name>.grpc[...].upstream_rq_time
//     (first byte sent upstream to the trailers), a histogram in ms.
//
// The service and method are in the names only when stats_for_all_methods
// is true (with replace_dots_in_grpc_service_name, the service's dots
// become underscores) or the pair is in individual_method_stats_allowlist;
// otherwise the counts go to the names without them (stats_for_all_methods
// defaults to false, as in current Envoy). With emit_filter_state the
// stream's filter state "envoy.filters.http.grpc_stats" holds the message
// counts (a FilterObject). A grpc-status that is not 0 to 16 counts in
// success/failure/total only: an upstream cannot mint stat names.
package grpcstats

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	grpcstatsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name; the filter state key is the same.
const Name = "envoy.filters.http.grpc_stats"

func init() {
	filter.RegisterHTTP(Name, &grpcstatsv3.FilterConfig{}, func(bc *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		return build(bc, m.(*grpcstatsv3.FilterConfig)), nil
	})
}

type factory struct {
	clusters                              filter.Clusters
	emitState, upstreamStats, replaceDots bool
	all                                   bool
	allow                                 map[string]bool // "service/method"
}

func build(bc *filter.BuildContext, m *grpcstatsv3.FilterConfig) *factory {
	f := &factory{clusters: bc.Clusters, emitState: m.GetEmitFilterState(), upstreamStats: m.GetEnableUpstreamStats(),
		replaceDots: m.GetReplaceDotsInGrpcServiceName(), all: m.GetStatsForAllMethods().GetValue()}
	if l := m.GetIndividualMethodStatsAllowlist(); l != nil {
		f.allow = map[string]bool{}
		for _, s := range l.GetServices() {
			for _, meth := range s.GetMethodNames() {
				f.allow[s.GetName()+"/"+meth] = true
			}
		}
	}
	return f
}

func (f *factory) New() filter.StreamFilter { return &stream{f: f} }

// stream is one call's counting.
type stream struct {
	f          *factory
	grpc       bool // the request is gRPC (or gRPC-Web)
	web        bool
	grpcResp   bool
	set        *methodStats // nil: no stat tracking
	reqFrames  frameCounter
	respFrames frameCounter
	state      *grpcstatsv3.FilterObject
}

// serviceMethod splits /<service>/<method>.
func serviceMethod(path []byte) (svc, method []byte, ok bool) {
	if len(path) < 2 || path[0] != '/' {
		return nil, nil, false
	}
	rest := path[1:]
	for i, c := range rest {
		if c == '/' {
			svc, method = rest[:i], rest[i+1:]
			for _, c := range method {
				if c == '/' || c == '?' {
					return nil, nil, false
				}
			}
			return svc, method, len(svc) > 0 && len(method) > 0
		}
	}
	return nil, nil, false
}

// contentKind reports gRPC and gRPC-Web content types.
func contentKind(h *protocol.Headers) (grpc, web bool) {
	ct, _ := h.Get("content-type")
	for _, p := range [...]string{"application/grpc-web", "application/grpc"} {
		if len(ct) < len(p) || !protocol.EqualFold(ct[:len(p)], p) {
			continue
		}
		if len(ct) == len(p) || ct[len(p)] == '+' || ct[len(p)] == ';' || ct[len(p)] == '-' {
			return true, p == "application/grpc-web"
		}
	}
	return false, false
}

func (s *stream) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	s.grpc, s.web = contentKind(h)
	if !s.grpc {
		return filter.Continue
	}
	c, ok := s.f.clusters.Get(cb.ClusterName())
	if !ok || c.StatsScope() == nil {
		return filter.Continue
	}
	svc, method, ok := serviceMethod(h.Path())
	if !ok {
		return filter.Continue
	}
	cs := c.Attached(attachKey{}, func() any { return &clusterStats{sc: c.StatsScope(), sets: map[string]*methodStats{}} }).(*clusterStats)
	key := ""
	switch {
	case s.f.all:
		service := string(svc)
		if s.f.replaceDots {
			service = strings.ReplaceAll(service, ".", "_")
		}
		key = service + "." + string(method)
	case s.f.allow != nil && s.f.allow[string(svc)+"/"+string(method)]:
		key = string(svc) + "." + string(method)
	}
	s.set = cs.get(key, s.f.upstreamStats)
	return filter.Continue
}

func (s *stream) DecodeData(cb filter.Callbacks, b *filter.Buffer, _ bool) filter.Status {
	if !s.grpc {
		return filter.Continue
	}
	if n := s.reqFrames.inspect(b.B); n > 0 {
		s.writeState(cb)
		if s.set != nil {
			s.set.reqMsgs.Add(n)
		}
	}
	return filter.Continue
}

func (s *stream) EncodeHeaders(cb filter.Callbacks, h *protocol.Headers, end bool) filter.Status {
	if end {
		s.grpcResp = h.Has("grpc-status")
	} else {
		s.grpcResp = h.StatusCode() == 200 && func() bool { g, _ := contentKind(h); return g }()
	}
	if s.set != nil {
		if st, ok := h.Get("grpc-status"); ok {
			s.charge(st)
		}
	}
	return filter.Continue
}

func (s *stream) EncodeData(cb filter.Callbacks, b *filter.Buffer, _ bool) filter.Status {
	if !s.grpcResp {
		return filter.Continue
	}
	if n := s.respFrames.inspect(b.B); n > 0 {
		s.writeState(cb)
		if s.set != nil {
			s.set.respMsgs.Add(n)
		}
	}
	return filter.Continue
}

func (s *stream) EncodeTrailers(cb filter.Callbacks, t *protocol.Headers) filter.Status {
	if s.set == nil {
		return filter.Continue
	}
	if st, ok := t.Get("grpc-status"); ok {
		s.charge(st)
	}
	if s.set.rqTime != nil {
		if start := cb.Info().UpstreamStart; !start.IsZero() {
			s.set.rqTime.Observe(float64(time.Since(start).Microseconds()) / 1000)
		}
	}
	return filter.Continue
}

// charge counts a grpc-status under the call's protocol.
func (s *stream) charge(status []byte) {
	p := &s.set.protos[0]
	if s.web {
		p = &s.set.protos[1]
	}
	p.once.Do(func() { p.init(s.set, s.web) })
	code, known := -1, len(status) > 0 && len(status) <= 2
	for _, c := range status {
		if c < '0' || c > '9' {
			known = false
			break
		}
		code = max(code, 0)*10 + int(c-'0')
	}
	if known && code <= 16 {
		p.status(code).Inc()
	}
	if string(status) == "0" {
		p.success.Inc()
	} else {
		p.failure.Inc()
	}
	p.total.Inc()
}

func (s *stream) writeState(cb filter.Callbacks) {
	if !s.f.emitState {
		return
	}
	if s.state == nil {
		s.state = &grpcstatsv3.FilterObject{}
		cb.Info().SetState(Name, s.state)
	}
	s.state.RequestMessageCount = s.reqFrames.frames
	s.state.ResponseMessageCount = s.respFrames.frames
}

// frameCounter counts gRPC frames in a byte stream cut anywhere: each
// frame is a flag byte, a 4-byte big-endian length, then the message. A
// frame counts when its flag byte is seen.
type frameCounter struct {
	frames uint64
	// hdr is how many header bytes of the current frame were seen (0:
	// between frames); length gathers its length; skip is the message
	// bytes left.
	hdr    int
	length uint32
	skip   uint64
}

// inspect reads p and returns the frames that began in it.
func (fc *frameCounter) inspect(p []byte) uint64 {
	var n uint64
	for len(p) > 0 {
		if fc.skip > 0 {
			k := min(uint64(len(p)), fc.skip)
			fc.skip -= k
			p = p[k:]
			continue
		}
		if fc.hdr == 0 {
			n++
			fc.hdr, fc.length = 1, 0
			p = p[1:]
			continue
		}
		fc.length = fc.length<<8 | uint32(p[0])
		fc.hdr++
		p = p[1:]
		if fc.hdr == 5 {
			fc.hdr, fc.skip = 0, uint64(fc.length)
		}
	}
	fc.frames += n
	return n
}

// attachKey keys the cluster's gRPC stats (upstream.Cluster.Attached).
type attachKey struct{}

// clusterStats are one cluster's gRPC stats, by "" (no method) or
// "<service>.<method>".
type clusterStats struct {
	sc   *stats.Scope
	mu   sync.RWMutex
	sets map[string]*methodStats
}

func (cs *clusterStats) get(key string, rqTime bool) *methodStats {
	cs.mu.RLock()
	m := cs.sets[key]
	cs.mu.RUnlock()
	if m != nil {
		return m
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if m = cs.sets[key]; m != nil {
		return m
	}
	m = &methodStats{key: key, cluster: cs.sc}
	sc := cs.sc.Scope("grpc", "", key)
	m.reqMsgs, m.respMsgs = sc.Counter("request_message_count"), sc.Counter("response_message_count")
	if rqTime {
		m.rqTime = sc.Histogram("upstream_rq_time")
	}
	cs.sets[key] = m
	return m
}

// methodStats are the stats of one name set; protos are the status
// counters of gRPC and gRPC-Web, made on first use.
type methodStats struct {
	key               string       // "" or "<service>.<method>"
	cluster           *stats.Scope // cluster.<name>.
	reqMsgs, respMsgs *stats.Counter
	rqTime            *stats.Histogram
	protos            [2]protoStats
}

type protoStats struct {
	once                    sync.Once
	sc                      *stats.Scope
	success, failure, total *stats.Counter
	codes                   [17]atomic.Pointer[stats.Counter]
}

// init makes the status counters under cluster.<name>.<protocol>[.key].
// (gRPC-Web's message counts stay under grpc, as Envoy's.)
func (p *protoStats) init(m *methodStats, web bool) {
	proto := "grpc"
	if web {
		proto = "grpc-web"
	}
	p.sc = m.cluster.Scope(proto, "", m.key)
	p.success, p.failure, p.total = p.sc.Counter("success"), p.sc.Counter("failure"), p.sc.Counter("total")
}

func (p *protoStats) status(code int) *stats.Counter {
	if c := p.codes[code].Load(); c != nil {
		return c
	}
	c := p.sc.Counter(itoa(code))
	p.codes[code].Store(c)
	return c
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return string(rune('0'+n/10)) + string(rune('0'+n%10))
}
