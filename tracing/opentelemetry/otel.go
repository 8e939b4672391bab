// Package opentelemetry is the OpenTelemetry tracer
// (envoy.tracers.opentelemetry): W3C trace context (traceparent,
// tracestate) taken from and given to requests, and a span per traced
// request exported over OTLP/gRPC to a collector cluster, batched off
// the request path.
package opentelemetry

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/spanbatch"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/proxy"
	"github.com/straitproxy/strait/stats"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

func init() {
	config.Register(config.Extension{Kind: config.Tracer, Name: "envoy.tracers.opentelemetry",
		TypeURL: "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig", Factory: proxy.TracerFactory(build)})
}

var supported = config.NewSupport(map[string]string{
	"envoy.config.trace.v3.OpenTelemetryConfig":  `grpc_service service_name`,
	"envoy.config.core.v3.GrpcService":           `envoy_grpc timeout`,
	"envoy.config.core.v3.GrpcService.EnvoyGrpc": `cluster_name authority`,
})

// W3C trace context headers.
const (
	hParent = "traceparent"
	hState  = "tracestate"
)

type tracer struct {
	service string
	rep     *reporter
}

func build(bc *filter.BuildContext, tc *anypb.Any) (proxy.Tracer, error) {
	var c tracev3.OpenTelemetryConfig
	if err := proxy.DecodeTracer(tc, &c, supported); err != nil {
		return nil, err
	}
	eg := c.GetGrpcService().GetEnvoyGrpc()
	if eg == nil {
		return nil, config.At("grpc_service", fmt.Errorf("required (an envoy_grpc cluster; http_service is not supported yet)"))
	}
	cluster := eg.GetClusterName()
	if err := proxy.CollectorCluster(bc, cluster); err != nil {
		return nil, config.At("grpc_service.envoy_grpc.cluster_name", err)
	}
	timeout := 5 * time.Second
	if d := c.GetGrpcService().GetTimeout(); d != nil && d.AsDuration() > 0 {
		timeout = d.AsDuration()
	}
	t := &tracer{service: c.GetServiceName()}
	if t.service == "" {
		t.service = "unknown_service:envoy" // Envoy's default
	}
	t.rep = sharedReporter(bc, cluster, eg.GetAuthority(), timeout, t.service, proxy.TracerStats(bc, "opentelemetry"))
	return t, nil
}

type span struct {
	t                     *tracer
	traceID, id, parentID []byte // 16, 8, 8 (parentID nil for a root)
	state                 string
	client                bool // the CLIENT side (an egress request, or upstream)
	upstream              bool // an upstream request's span
	start                 time.Time
}

// Start implements proxy.Tracer, as Envoy's OpenTelemetry tracer: the
// request's traceparent is continued (a span of ours under the caller's,
// sampled as the caller's says), or a trace begun (sampled when traced).
// h then carries our span's context, sampled or not; an unsampled span is
// not recorded (nil). A traceparent we cannot read gets no span and is
// passed on as it came.
func (t *tracer) Start(h *protocol.Headers, start time.Time, egress, traced bool) proxy.Span {
	var trace, parent []byte
	if v, ok := h.Get(hParent); ok {
		var sampled bool
		trace, parent, sampled, ok = parseParent(string(v))
		if !ok {
			return nil // Envoy's null span: the header is left as it came
		}
		traced = sampled
	}
	if !traced {
		// Not recorded: the upstream still gets a context of ours that
		// says so (and the caller's tracestate stays as it came).
		var tid [16]byte
		var id [8]byte
		if trace == nil {
			fillRandom(tid[:])
			trace = tid[:]
		}
		fillRandom(id[:])
		var b [55]byte
		h.SetBytes(hParent, appendParent(b[:0], trace, id[:], false))
		return nil
	}
	s := &span{t: t, start: start, client: egress, traceID: trace, parentID: parent}
	if st, ok := h.Get(hState); ok && trace != nil {
		s.state = string(st)
	}
	if s.traceID == nil {
		s.traceID = randomID(16)
	}
	s.id = randomID(8)
	s.inject(h)
	return s
}

// inject sets h's W3C context to the (sampled) span's.
func (s *span) inject(h *protocol.Headers) {
	var b [55]byte
	h.SetBytes(hParent, appendParent(b[:0], s.traceID, s.id, true))
	if s.state != "" {
		h.Set(hState, s.state)
	}
}

// appendParent appends a version 00 traceparent.
func appendParent(b, trace, id []byte, sampled bool) []byte {
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, trace)
	b = append(b, '-')
	b = hex.AppendEncode(b, id)
	if sampled {
		return append(b, "-01"...)
	}
	return append(b, "-00"...)
}

// Child implements proxy.Span: a CLIENT span for an upstream request.
func (s *span) Child(h *protocol.Headers, start time.Time) proxy.Span {
	c := *s
	c.parentID, c.id, c.client, c.upstream, c.start = s.id, randomID(8), true, true, start
	c.inject(h)
	return &c
}

// parseParent reads a W3C traceparent: version 00 (a later version's
// first four fields are read the same way).
func parseParent(v string) (trace, parent []byte, sampled, ok bool) {
	parts := strings.Split(strings.TrimSpace(v), "-")
	if _, err := strconv.ParseUint(parts[0], 16, 8); err != nil || parts[0] != strings.ToLower(parts[0]) {
		return nil, nil, false, false
	}
	if len(parts) < 4 || len(parts[0]) != 2 || parts[0] == "ff" || parts[0] == "00" && len(parts) != 4 ||
		len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return nil, nil, false, false
	}
	var err error
	if trace, err = hex.DecodeString(parts[1]); err != nil || isZero(trace) || parts[1] != strings.ToLower(parts[1]) {
		return nil, nil, false, false
	}
	if parent, err = hex.DecodeString(parts[2]); err != nil || isZero(parent) || parts[2] != strings.ToLower(parts[2]) {
		return nil, nil, false, false
	}
	flags, err := strconv.ParseUint(parts[3], 16, 8)
	if err != nil {
		return nil, nil, false, false
	}
	return trace, parent, flags&1 == 1, true
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func randomID(n int) []byte {
	b := make([]byte, n)
	fillRandom(b)
	return b
}

// fillRandom fills b with random bytes, not all zero.
func fillRandom(b []byte) {
	n := len(b)
	for {
		for i := 0; i < n; i += 8 {
			v := rand.Uint64()
			for j := 0; j < 8 && i+j < n; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		if !isZero(b) {
			return
		}
	}
}

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// Finish implements proxy.Span.
func (s *span) Finish(e *proxy.SpanEnd) {
	name, client := e.Name(s.upstream, s.client)
	kind := tracepb.Span_SPAN_KIND_SERVER
	if client {
		kind = tracepb.Span_SPAN_KIND_CLIENT
	}
	var attrs []*commonpb.KeyValue
	failed := false
	e.EnvoyTags(s.upstream, func(k, v string) {
		if k == "error" { // the span's status, as Envoy's tracer sets it
			failed = true
			return
		}
		attrs = append(attrs, str(k, v))
	})
	for _, kv := range e.Tags {
		attrs = append(attrs, str(kv[0], kv[1]))
	}
	sp := &tracepb.Span{TraceId: s.traceID, SpanId: s.id, ParentSpanId: s.parentID, TraceState: s.state, Name: name, Kind: kind,
		StartTimeUnixNano: uint64(s.start.UnixNano()), EndTimeUnixNano: uint64(e.End.UnixNano()), Attributes: attrs}
	if failed {
		sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	}
	s.t.rep.batch.Add(sp)
}

// reporters are shared by tracers exporting to the same collector.
var reporters spanbatch.Shared[*reporter]

type reporter struct {
	clusters  atomic.Pointer[filter.Clusters]
	cluster   string
	authority string
	timeout   time.Duration
	resource  *resourcepb.Resource
	batch     spanbatch.Batcher[*tracepb.Span]

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by host address

	sent, failed, noCluster *stats.Counter
}

func sharedReporter(bc *filter.BuildContext, cluster, authority string, timeout time.Duration, service string, sc *stats.Scope) *reporter {
	key := fmt.Sprintf("%q %q %v %q", cluster, authority, timeout, service)
	r, reused := reporters.Get(key, func() *reporter { return newReporter(bc, cluster, authority, timeout, service, sc) })
	if reused {
		r.clusters.Store(&bc.Clusters) // the newest cluster lookup
	}
	return r
}

func newReporter(bc *filter.BuildContext, cluster, authority string, timeout time.Duration, service string, sc *stats.Scope) *reporter {
	r := &reporter{cluster: cluster, authority: authority, timeout: timeout, conns: map[string]*grpc.ClientConn{},
		resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", service)}},
		sent:     sc.Counter("reports_sent"), failed: sc.Counter("reports_failed"), noCluster: sc.Counter("reports_skipped_no_cluster")}
	r.batch = spanbatch.Batcher[*tracepb.Span]{Lookup: bc.Runtime.Uint, MinFlushKey: "tracing.opentelemetry.min_flush_spans",
		FlushKey: "tracing.opentelemetry.flush_interval_ms", Send: r.send,
		SpansSent: sc.Counter("spans_sent"), TimerFlushed: sc.Counter("timer_flushed"), Dropped: sc.Counter("spans_dropped")}
	r.clusters.Store(&bc.Clusters)
	r.batch.Start()
	return r
}

// send exports a batch over OTLP/gRPC to a host of the cluster.
func (r *reporter) send(batch []*tracepb.Span) int {
	cl, ok := (*r.clusters.Load()).Get(r.cluster)
	if !ok {
		r.noCluster.Inc()
		return 0
	}
	h := cl.Pick(nil)
	if h == nil {
		r.failed.Inc()
		return 0
	}
	r.mu.Lock()
	for addr, c := range r.conns { // hosts that left the cluster
		if cl.Host(addr) == nil {
			c.Close()
			delete(r.conns, addr)
		}
	}
	cc := r.conns[h.Addr]
	if cc == nil {
		// Through the cluster's transport socket (TLS when it has one),
		// offering h2; gRPC then speaks over what that gives.
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return h.DialUncounted(ctx, []string{"h2"}) })}
		if r.authority != "" {
			opts = append(opts, grpc.WithAuthority(r.authority))
		}
		var err error
		if cc, err = grpc.NewClient("passthrough:///"+h.Addr, opts...); err != nil {
			r.mu.Unlock()
			r.failed.Inc()
			return 0
		}
		r.conns[h.Addr] = cc
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	_, err := collectorpb.NewTraceServiceClient(cc).Export(ctx, &collectorpb.ExportTraceServiceRequest{
		ResourceSpans: []*tracepb.ResourceSpans{{Resource: r.resource,
			ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "strait"}, Spans: batch}}}}})
	if err != nil {
		r.failed.Inc()
		r.mu.Lock() // a new connection next time
		if r.conns[h.Addr] == cc {
			delete(r.conns, h.Addr)
		}
		r.mu.Unlock()
		cc.Close()
		return 0
	}
	r.sent.Inc()
	return len(batch)
}
