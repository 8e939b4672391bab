// Package zipkin is the Zipkin tracer (envoy.tracers.zipkin): B3 trace
// context taken from and given to requests, and one span per traced
// request reported to a collector cluster in Zipkin's v2 JSON, batched
// off the request path.
package zipkin

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/spanbatch"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/proxy"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/types/known/anypb"
)

func init() {
	config.Register(config.Extension{Kind: config.Tracer, Name: "envoy.tracers.zipkin",
		TypeURL: "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig", Factory: proxy.TracerFactory(build)})
}

var supported = config.NewSupport(map[string]string{
	"envoy.config.trace.v3.ZipkinConfig": `collector_cluster collector_endpoint trace_id_128bit
		shared_span_context collector_endpoint_version collector_hostname collector_service`,
	"envoy.config.core.v3.HttpService":       `http_uri request_headers_to_add`,
	"envoy.config.core.v3.HttpUri":           `uri cluster timeout`,
	"envoy.config.core.v3.HeaderValueOption": `header`,
	"envoy.config.core.v3.HeaderValue":       `key value`,
})

// B3 propagation headers.
const (
	hTraceID  = "x-b3-traceid"
	hSpanID   = "x-b3-spanid"
	hParentID = "x-b3-parentspanid"
	hSampled  = "x-b3-sampled"
	hFlags    = "x-b3-flags"
	hSingle   = "b3"
)

// Envoy's runtime keys for the reporter, with its defaults.
const (
	flushIntervalKey = "tracing.zipkin.flush_interval_ms"
	minFlushKey      = "tracing.zipkin.min_flush_spans"
)

// tracer is one connection manager's Zipkin tracer.
type tracer struct {
	shared  bool
	id128   bool
	service string // the node's cluster: the spans' localEndpoint
	rep     *reporter
}

func build(bc *filter.BuildContext, tc *anypb.Any) (proxy.Tracer, error) {
	var c tracev3.ZipkinConfig
	if err := proxy.DecodeTracer(tc, &c, supported); err != nil {
		return nil, err
	}
	// Where spans go: collector_service (an HTTP service: the URI's path
	// and host on its cluster), else the legacy collector_* fields.
	cluster, path, host := c.GetCollectorCluster(), c.GetCollectorEndpoint(), c.GetCollectorHostname()
	timeout := 5 * time.Second
	var headers [][2]string
	if svc := c.GetCollectorService(); svc != nil {
		if cluster != "" || path != "" || host != "" {
			return nil, config.At("collector_service", fmt.Errorf("give either collector_service or collector_cluster and collector_endpoint"))
		}
		u, err := url.Parse(svc.GetHttpUri().GetUri())
		// The scheme says nothing more: TLS is the cluster's transport
		// socket, as in Envoy.
		if err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
			return nil, config.At("collector_service.http_uri.uri", fmt.Errorf("%q is not an http:// or https:// URI", svc.GetHttpUri().GetUri()))
		}
		cluster, path, host = svc.GetHttpUri().GetCluster(), u.RequestURI(), u.Host
		if d := svc.GetHttpUri().GetTimeout(); d != nil && d.AsDuration() > 0 {
			timeout = d.AsDuration()
		}
		for _, o := range svc.GetRequestHeadersToAdd() {
			headers = append(headers, [2]string{o.GetHeader().GetKey(), o.GetHeader().GetValue()})
		}
		if cluster == "" {
			return nil, config.At("collector_service.http_uri.cluster", fmt.Errorf("required"))
		}
	}
	switch {
	case cluster == "":
		return nil, config.At("collector_cluster", fmt.Errorf("required"))
	case !strings.HasPrefix(path, "/"):
		return nil, config.At("collector_endpoint", fmt.Errorf("%q: an absolute path is required", path))
	case c.GetCollectorEndpointVersion() != tracev3.ZipkinConfig_HTTP_JSON:
		return nil, config.At("collector_endpoint_version", fmt.Errorf("%s is not supported (supported: HTTP_JSON)", c.GetCollectorEndpointVersion()))
	}
	if err := proxy.CollectorCluster(bc, cluster); err != nil {
		return nil, config.At("collector_cluster", err)
	}
	t := &tracer{shared: true, id128: c.GetTraceId_128Bit()}
	if v := c.GetSharedSpanContext(); v != nil {
		t.shared = v.GetValue()
	}
	if n := bc.Node; n != nil {
		t.service = n.GetCluster()
	}
	if host == "" {
		host = cluster
	}
	col := &collector{cluster: cluster, path: path, host: host, timeout: timeout, headers: headers}
	key := fmt.Sprintf("%q %q %q %v %q", col.cluster, col.path, col.host, col.timeout, col.headers)
	rep, reused := reporters.Get(key, func() *reporter { return newReporter(bc, col, proxy.TracerStats(bc, "zipkin")) })
	if reused {
		rep.clusters.Store(&bc.Clusters) // the newest cluster lookup
	}
	t.rep = rep
	return t, nil
}

// reporters are shared by tracers that report to the same collector.
var reporters spanbatch.Shared[*reporter]

// collector is where a reporter posts spans.
type collector struct {
	cluster, path, host string
	timeout             time.Duration
	headers             [][2]string
}

// span is a request's span in the making.
type span struct {
	t                     *tracer
	traceID, id, parentID string
	shared, debug         bool
	start                 time.Time
	name                  string
	client                bool // the CLIENT side (an egress request, or upstream)
	upstream              bool // an upstream request's span
}

// Child implements proxy.Span: a CLIENT span under s for an upstream
// request, whose context h then carries.
func (s *span) Child(h *protocol.Headers, start time.Time) proxy.Span {
	c := *s
	c.id, c.parentID, c.shared, c.client, c.upstream, c.start = newID(false), s.id, false, true, true, start
	h.Del(hSingle)
	h.Set(hTraceID, c.traceID)
	h.Set(hSpanID, c.id)
	h.Set(hParentID, c.parentID)
	h.Set(hSampled, "1")
	return &c
}

// Start implements proxy.Tracer: the B3 context of h (b3 single header,
// else x-b3-*) is continued, a new trace begun without one. Its sampling
// state, when it has one, decides whether the span is sampled ("1" or
// debug: sampled; "0" or a value B3 does not define: not), else traced
// does. h then carries the span's context, with its sampling state; an
// unsampled span is not recorded (nil).
func (t *tracer) Start(h *protocol.Headers, start time.Time, egress, traced bool) proxy.Span {
	traceID, spanID, parentID, sampled, debug := extract(h)
	if sampled != "" || debug {
		traced = sampled == "1" || debug
	}
	var id string
	shared := false
	switch {
	case traceID == "" || spanID == "":
		traceID = newID(t.id128)
		id, parentID = traceID[len(traceID)-16:], ""
	case t.shared && !egress: // a CLIENT span never shares the caller's id
		// The client's span, shared: the server side of the same id.
		id, shared = spanID, true
	default:
		id, parentID = newID(false), spanID
	}
	// The upstream continues this span.
	h.Del(hSingle)
	h.Set(hTraceID, traceID)
	h.Set(hSpanID, id)
	if parentID != "" {
		h.Set(hParentID, parentID)
	} else {
		h.Del(hParentID)
	}
	if !traced {
		h.Set(hSampled, "0")
		return nil
	}
	h.Set(hSampled, "1")
	s := &span{t: t, start: start, debug: debug, client: egress, traceID: traceID, id: id, parentID: parentID, shared: shared}
	return s
}

// extract reads a B3 context: the single b3 header wins.
func extract(h *protocol.Headers) (traceID, spanID, parentID, sampled string, debug bool) {
	if v, ok := h.Get(hSingle); ok {
		parts := strings.Split(strings.ToLower(string(v)), "-")
		switch len(parts) {
		case 1: // only a sampling state
			sampled = parts[0]
		case 2, 3, 4:
			traceID, spanID = parts[0], parts[1]
			if len(parts) > 2 {
				sampled = parts[2]
			}
			if len(parts) > 3 {
				parentID = parts[3]
			}
		}
		if sampled == "d" {
			sampled, debug = "1", true
		}
		if !validID(traceID, true) || !validID(spanID, false) || parentID != "" && !validID(parentID, false) {
			traceID, spanID, parentID = "", "", ""
		}
		return
	}
	t, _ := h.Get(hTraceID)
	sp, _ := h.Get(hSpanID)
	p, _ := h.Get(hParentID)
	smp, _ := h.Get(hSampled)
	f, _ := h.Get(hFlags)
	traceID, spanID, parentID, sampled, debug = strings.ToLower(string(t)), strings.ToLower(string(sp)), strings.ToLower(string(p)), string(smp), string(f) == "1"
	if sampled == "true" {
		sampled = "1"
	} else if sampled == "false" {
		sampled = "0"
	}
	if !validID(traceID, true) || !validID(spanID, false) || parentID != "" && !validID(parentID, false) {
		traceID, spanID, parentID = "", "", ""
	}
	return
}

// validID reports a 16 (or, for a trace id, 32) hex digit id, not zero.
func validID(s string, trace bool) bool {
	if len(s) != 16 && !(trace && len(s) == 32) {
		return false
	}
	zero := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
		zero = zero && c == '0'
	}
	return !zero
}

func newID(long bool) string {
	var b [16]byte
	n := 8
	if long {
		n = 16
	}
	for {
		for i := 0; i < n; i += 8 {
			v := rand.Uint64()
			for j := 0; j < 8; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		s := hex.EncodeToString(b[:n])
		if validID(s, long) {
			return s
		}
	}
}

// zspan is a span in Zipkin's v2 JSON.
type zspan struct {
	TraceID        string            `json:"traceId"`
	ID             string            `json:"id"`
	ParentID       string            `json:"parentId,omitempty"`
	Name           string            `json:"name"`
	Kind           string            `json:"kind"`
	Timestamp      int64             `json:"timestamp"`
	Duration       int64             `json:"duration"`
	Shared         bool              `json:"shared,omitempty"`
	Debug          bool              `json:"debug,omitempty"`
	LocalEndpoint  *endpoint         `json:"localEndpoint,omitempty"`
	RemoteEndpoint *endpoint         `json:"remoteEndpoint,omitempty"`
	Tags           map[string]string `json:"tags"`
}

type endpoint struct {
	ServiceName string `json:"serviceName,omitempty"`
	IPv4        string `json:"ipv4,omitempty"`
	IPv6        string `json:"ipv6,omitempty"`
	Port        int    `json:"port,omitempty"`
}

// Finish implements proxy.Span: the span, with Envoy's tags, goes to the
// reporter.
func (s *span) Finish(e *proxy.SpanEnd) {
	name, client := e.Name(s.upstream, s.client)
	kind := "SERVER"
	if client {
		kind = "CLIENT"
	}
	z := &zspan{TraceID: s.traceID, ID: s.id, ParentID: s.parentID, Name: name, Kind: kind,
		Timestamp: s.start.UnixMicro(), Duration: max(1, e.End.Sub(s.start).Microseconds()), Shared: s.shared, Debug: s.debug,
		LocalEndpoint: &endpoint{ServiceName: s.t.service}}
	tags := map[string]string{}
	e.EnvoyTags(s.upstream, func(k, v string) { tags[k] = v })
	if e.Peer != "" {
		if host, port, err := net.SplitHostPort(e.Peer); err == nil {
			ep := &endpoint{}
			if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
				ep.IPv4 = host
			} else {
				ep.IPv6 = host
			}
			ep.Port, _ = strconv.Atoi(port)
			z.RemoteEndpoint = ep
		}
	}
	for _, kv := range e.Tags {
		tags[kv[0]] = kv[1]
	}
	z.Tags = tags
	s.t.rep.add(z)
}

// reporter posts batches of spans to the collector cluster.
type reporter struct {
	clusters atomic.Pointer[filter.Clusters]
	col      *collector
	client   *http.Client
	batch    spanbatch.Batcher[*zspan]

	// As Envoy counts them: failed, a network failure; dropped, an
	// answer other than 2xx.
	noCluster, sent, failed, dropped *stats.Counter
}

func newReporter(bc *filter.BuildContext, col *collector, sc *stats.Scope) *reporter {
	r := &reporter{col: col, noCluster: sc.Counter("reports_skipped_no_cluster"),
		sent: sc.Counter("reports_sent"), failed: sc.Counter("reports_failed"), dropped: sc.Counter("reports_dropped")}
	r.batch = spanbatch.Batcher[*zspan]{Lookup: bc.Runtime.Uint, MinFlushKey: minFlushKey, FlushKey: flushIntervalKey,
		Send: r.send, SpansSent: sc.Counter("spans_sent"), TimerFlushed: sc.Counter("timer_flushed"), Dropped: sc.Counter("spans_dropped")}
	// Connections go through the cluster's transport socket (TLS when it
	// has one, offering http/1.1).
	r.client = &http.Client{Timeout: col.timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			cl, ok := (*r.clusters.Load()).Get(col.cluster)
			if !ok {
				return nil, fmt.Errorf("no cluster %q", col.cluster)
			}
			h := cl.Host(addr)
			if h == nil {
				return nil, fmt.Errorf("host %s left cluster %q", addr, col.cluster)
			}
			return h.DialUncounted(ctx, []string{"http/1.1"})
		}}}
	r.clusters.Store(&bc.Clusters)
	r.batch.Start()
	return r
}

func (r *reporter) add(z *zspan) { r.batch.Add(z) }

// send posts a batch; it returns the spans that went.
func (r *reporter) send(batch []*zspan) int {
	cl, ok := (*r.clusters.Load()).Get(r.col.cluster)
	if !ok {
		r.noCluster.Inc()
		return 0
	}
	h := cl.Pick(nil)
	if h == nil {
		r.failed.Inc()
		return 0
	}
	body, err := json.Marshal(batch)
	if err != nil {
		r.failed.Inc()
		return 0
	}
	req, err := http.NewRequest("POST", "http://"+h.Addr+r.col.path, bytes.NewReader(body))
	if err != nil {
		r.failed.Inc()
		return 0
	}
	req.Host = r.col.host
	req.Header.Set("Content-Type", "application/json")
	for _, kv := range r.col.headers {
		req.Header.Add(kv[0], kv[1])
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.failed.Inc()
		return 0
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		r.dropped.Inc()
		return 0
	}
	r.sent.Inc()
	return len(batch)
}
