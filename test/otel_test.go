package test

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// otlpCollector is an OTLP/gRPC trace collector keeping what it gets.
// startOTLP serves an OTLP/gRPC trace collector on a loopback port.
func startOTLP(t *testing.T) (*otlpCollector, string) { return startOTLPTLS(t, "", "") }

// startOTLPTLS is startOTLP over TLS with the certificate (none: plain).
func startOTLPTLS(t *testing.T, cert, key string) (*otlpCollector, string) {
	col := &otlpCollector{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if cert != "" {
		creds, err := credentials.NewServerTLSFromFile(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(opts...)
	collectorpb.RegisterTraceServiceServer(gs, col)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return col, ln.Addr().String()
}

type otlpCollector struct {
	collectorpb.UnimplementedTraceServiceServer
	mu      sync.Mutex
	spans   []*tracepb.Span
	service string
}

func (c *otlpCollector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				c.service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func (c *otlpCollector) all() []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tracepb.Span(nil), c.spans...)
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			return a.GetValue().GetStringValue()
		}
	}
	return ""
}

// TestOpenTelemetryTracer: with tracing.provider envoy.tracers.opentelemetry,
// a traced request's span is exported over OTLP/gRPC to the collector
// cluster, its W3C trace context continued (a span of ours under the
// caller's) and given to the upstream; with spawn_upstream_span the
// upstream request has a CLIENT span of its own; a traceparent that is
// not sampled means no span (its upstream gets our context, not sampled).
func TestOpenTelemetryTracer(t *testing.T) {
	col, colAddr := startOTLP(t)
	var mu sync.Mutex
	seen := map[string]string{}
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("traceparent")
		mu.Unlock()
	}, false)
	y := httpBootstrap(up, routeCfg{hcmOpts: `          tracing:
            random_sampling: { value: 100 }
            spawn_upstream_span: true
            custom_tags: [ { tag: env, environment: { name: STRAIT_NO_SUCH_VAR, default_value: test } } ]
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: { envoy_grpc: { cluster_name: otel }, timeout: 2s }
                service_name: strait-gateway`}, "")
	y = flushEachSpan(withCollector(y, "otel", colAddr, true), "tracing.opentelemetry.min_flush_spans")
	p := startProxy(t, y)
	do := func(path string, kv ...string) { doReq(t, "GET", p.url("ingress")+path, "", kv...) }
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	do("/new")
	do("/cont", "traceparent", "00-"+callerTrace+"-"+callerSpan+"-01", "tracestate", "vendor=x")
	do("/off", "traceparent", "00-"+callerTrace+"-"+callerSpan+"-00")
	do("/bad", "traceparent", "00-"+callerTrace+"-"+callerSpan+"-01-extra")
	testutil.Eventually(t, 5*time.Second, "four spans at the collector", func() bool { return len(col.all()) >= 4 })
	time.Sleep(100 * time.Millisecond)
	// The requests' spans by path; the upstream attempts' spans (which,
	// as Envoy's, carry no request tags) under them.
	servers := map[string]*tracepb.Span{}
	var clients []*tracepb.Span
	for _, s := range col.all() {
		if s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			clients = append(clients, s)
			continue
		}
		u := attr(s, "http.url")
		servers[u[strings.LastIndex(u, "/"):]] = s
	}
	if len(servers) != 2 || servers["/new"] == nil || servers["/cont"] == nil || len(clients) != 2 {
		t.Fatalf("request spans %v, attempt spans %v", servers, clients)
	}
	mu.Lock()
	defer mu.Unlock()
	for path, server := range servers {
		var client *tracepb.Span
		for _, c := range clients {
			if bytesEq(c.GetParentSpanId(), server.GetSpanId()) {
				client = c
			}
		}
		if client == nil || client.GetKind() != tracepb.Span_SPAN_KIND_CLIENT || !bytesEq(client.GetTraceId(), server.GetTraceId()) ||
			attr(client, "peer.address") != up || attr(client, "http.url") != "" || attr(client, "env") != "test" {
			t.Fatalf("%s: server %v client %v", path, server, client)
		}
		want := "00-" + hex.EncodeToString(server.GetTraceId()) + "-" + hex.EncodeToString(client.GetSpanId()) + "-01"
		if seen[path] != want {
			t.Errorf("%s: upstream traceparent %q, want %q", path, seen[path], want)
		}
		if attr(server, "http.status_code") != "200" || attr(server, "env") != "test" || server.GetEndTimeUnixNano() < server.GetStartTimeUnixNano() {
			t.Errorf("%s: server span %v", path, server)
		}
		if path == "/cont" {
			if hex.EncodeToString(server.GetTraceId()) != callerTrace || hex.EncodeToString(server.GetParentSpanId()) != callerSpan || server.GetTraceState() != "vendor=x" {
				t.Errorf("/cont: the caller's context was not continued: %v", server)
			}
		} else if len(server.GetParentSpanId()) != 0 {
			t.Errorf("/new: a root span has a parent: %v", server)
		}
	}
	// Not sampled: no span, but the upstream gets our (unsampled) span's
	// context under the caller's trace, as from Envoy; a traceparent we
	// cannot read passes as it came.
	if off := seen["/off"]; !strings.HasPrefix(off, "00-"+callerTrace+"-") || !strings.HasSuffix(off, "-00") || strings.Contains(off, callerSpan) || len(off) != 55 {
		t.Errorf("/off: upstream traceparent %q, want the caller's trace, a span id of ours, not sampled", off)
	}
	if seen["/bad"] != "00-"+callerTrace+"-"+callerSpan+"-01-extra" {
		t.Errorf("/bad: upstream traceparent %q, want the unreadable header passed on", seen["/bad"])
	}
	col.mu.Lock()
	if col.service != "strait-gateway" {
		t.Errorf("service.name %q", col.service)
	}
	col.mu.Unlock()
	if n := p.stat("tracing.opentelemetry.spans_sent"); n != 4 {
		t.Errorf("tracing.opentelemetry.spans_sent %d", n)
	}
}

// TestOpenTelemetrySampledParent: a traceparent's sampled flag overrides
// the connection manager's decision: with random_sampling 0, a request
// whose traceparent is sampled gets a span; one without traceparent gets
// none and its upstream a traceparent of ours, not sampled.
func TestOpenTelemetrySampledParent(t *testing.T) {
	col, colAddr := startOTLP(t)
	var mu sync.Mutex
	seen := map[string]string{}
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("traceparent")
		mu.Unlock()
	}, false)
	y := httpBootstrap(up, routeCfg{hcmOpts: `          tracing:
            random_sampling: { value: 0 }
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: { envoy_grpc: { cluster_name: otel } }`}, "")
	p := startProxy(t, flushEachSpan(withCollector(y, "otel", colAddr, true), "tracing.opentelemetry.min_flush_spans"))
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	doReq(t, "GET", p.url("ingress")+"/plain", "")
	doReq(t, "GET", p.url("ingress")+"/forced", "", "traceparent", caller)
	testutil.Eventually(t, 5*time.Second, "the forced span", func() bool { return len(col.all()) >= 1 })
	time.Sleep(100 * time.Millisecond)
	spans := col.all()
	if len(spans) != 1 || !strings.HasSuffix(attr(spans[0], "http.url"), "/forced") {
		t.Fatalf("spans %v, want only /forced's", spans)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + hex.EncodeToString(spans[0].GetSpanId()) + "-01"; seen["/forced"] != want {
		t.Errorf("/forced: upstream traceparent %q, want %q", seen["/forced"], want)
	}
	if tp := seen["/plain"]; len(tp) != 55 || !strings.HasSuffix(tp, "-00") {
		t.Errorf("/plain: upstream traceparent %q, want ours, not sampled", tp)
	}
}

func bytesEq(a, b []byte) bool { return string(a) == string(b) && len(a) > 0 }

// TestIstioGatewayOpenTelemetry: Istio's mesh config names an
// opentelemetry tracing provider; pilot's envoy.tracers.opentelemetry
// config is ACKed and the gateway's spans reach the OTLP collector.
func TestIstioGatewayOpenTelemetry(t *testing.T) {
	col, colAddr := startOTLP(t)
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }, false)
	_, ps, _ := net.SplitHostPort(closedPort(t))
	port := 0
	fmt.Sscan(ps, &port)
	se := serviceEntryOf("GRPC", "otel", "otel.istio-system.svc.cluster.local", 4317, colAddr)
	cfg := istioBase(port, up) + istioRoute + se
	meshCfg := `enableTracing: true
defaultConfig:
  tracing: { sampling: 100 }
extensionProviders:
- name: otel
  opentelemetry: { service: otel.istio-system.svc.cluster.local, port: 4317 }
defaultProviders:
  tracing: [otel]
`
	pilot := startPilotWith(t, cfg, "", meshCfg)
	y := flushEachSpan(istioGateway(pilot.Addr, false), "tracing.opentelemetry.min_flush_spans")
	proc := runStrait(t, y, 0)
	admin := "http://" + proc.admin
	c := &http.Client{Timeout: 2 * time.Second}
	code, _ := awaitGateway(func() (int, string) { return body(c, fmt.Sprintf("http://127.0.0.1:%d/o", port)) })
	if r := rejections(t, admin); code != 200 || len(r) > 0 {
		t.Fatalf("through the gateway: %d; rejected %v\n%s", code, r, proc.stderr.String())
	}
	testutil.Eventually(t, 10*time.Second, "spans at the OTLP collector", func() bool { return len(col.all()) >= 1 })
	t.Logf("%d spans; first %v", len(col.all()), col.all()[0])
}
