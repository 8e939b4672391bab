package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// zipkinCollector is a Zipkin collector: it keeps the v2 JSON spans
// posted to /api/v2/spans.
type zipkinCollector struct {
	addr  string
	mu    sync.Mutex
	spans []map[string]any
	hosts []string
}

func startZipkin(t *testing.T) *zipkinCollector { return startZipkinTLS(t, "", "") }

// startZipkinTLS is startZipkin over TLS with the certificate (none: plain).
func startZipkinTLS(t *testing.T, cert, key string) *zipkinCollector {
	z := &zipkinCollector{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var got []map[string]any
		if r.URL.Path != "/api/v2/spans" || r.Method != "POST" || json.NewDecoder(r.Body).Decode(&got) != nil {
			w.WriteHeader(400)
			return
		}
		z.mu.Lock()
		z.spans = append(z.spans, got...)
		z.hosts = append(z.hosts, r.Host)
		z.mu.Unlock()
		w.WriteHeader(202)
	})
	if cert != "" {
		z.addr = serveTLS(t, cert, key, nil, &http.Server{Handler: handler})
	} else {
		z.addr = serveHTTP(t, handler, false)
	}
	return z
}

// withCollectorTLS is withCollector whose cluster speaks TLS, trusting
// the CA file.
func withCollectorTLS(y, name, addr string, h2 bool, ca string) string {
	y = withCollector(y, name, addr, h2)
	return strings.Replace(y, "  - name: "+name+"\n    connect_timeout: 1s\n", "  - name: "+name+"\n    connect_timeout: 1s\n"+
		"    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n"+
		"        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"+
		"        common_tls_context: { validation_context: { trusted_ca: { filename: "+ca+" } } }\n", 1)
}

// TestTracersOverTLS: a collector cluster with a TLS transport socket is
// reached over TLS (its certificate checked against the CA), by the
// Zipkin and the OpenTelemetry tracer; the collectors accept only TLS.
func TestTracersOverTLS(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "collector", false, "collector.example")
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {}, false)
	zk := startZipkinTLS(t, cert, key)
	y := httpBootstrap(up, routeCfg{hcmOpts: zipkinTracing(100, "")}, "")
	p := startProxy(t, flushEachSpan(withCollectorTLS(y, "zipkin", zk.addr, false, pki.caFile), "tracing.zipkin.min_flush_spans"))
	if code, _ := get(t, p.url("ingress")+"/z"); code != 200 {
		t.Fatalf("%d", code)
	}
	testutil.Eventually(t, 5*time.Second, "a span at the TLS Zipkin collector", func() bool { return len(zk.all()) >= 1 })

	col, colAddr := startOTLPTLS(t, cert, key)
	y = httpBootstrap(up, routeCfg{hcmOpts: `          tracing:
            random_sampling: { value: 100 }
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: { envoy_grpc: { cluster_name: otel } }`}, "")
	p = startProxy(t, flushEachSpan(withCollectorTLS(y, "otel", colAddr, true, pki.caFile), "tracing.opentelemetry.min_flush_spans"))
	if code, _ := get(t, p.url("ingress")+"/o"); code != 200 {
		t.Fatalf("%d", code)
	}
	testutil.Eventually(t, 5*time.Second, "a span at the TLS OTLP collector", func() bool { return len(col.all()) >= 1 })
}

func (z *zipkinCollector) all() []map[string]any {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]map[string]any(nil), z.spans...)
}

// TestZipkinTracer: with tracing.provider envoy.tracers.zipkin, each
// traced request gets a span posted to the collector cluster, with
// Envoy's tags; the upstream gets the span's B3 context; an incoming B3
// context is continued (the client's span shared); a request the client
// marks not sampled gets no span.
func TestZipkinTracer(t *testing.T) {
	zk := startZipkin(t)
	var mu sync.Mutex
	seen := map[string]http.Header{}
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
		if r.URL.Path == "/fail" {
			w.WriteHeader(503)
		}
	}, false)
	y := httpBootstrap(up, routeCfg{hcmOpts: `          tracing:
            random_sampling: { value: 100 }
            custom_tags:
            - { tag: mesh, literal: { value: strait-test } }
            - { tag: tenant, request_header: { name: X-Tenant, default_value: none } }
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
                collector_hostname: zipkin.example`}, "")
	y = withCollector(y, "zipkin", zk.addr, false)
	y = strings.Replace(y, "  - name: backend\n", "  - name: backend\n    alt_stat_name: backend_stats\n", 1)
	y = "node: { id: gw-1, cluster: gateway, locality: { zone: z1 } }\n" + flushEachSpan(y, "tracing.zipkin.min_flush_spans")
	p := startProxy(t, y)
	url := p.url("ingress")
	do := func(path string, kv ...string) { doReq(t, "GET", url+path, "", kv...) }
	do("/new", "x-tenant", "acme")
	do("/fail")
	do("/cont", "x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-parentspanid", "0020000000000001", "x-b3-sampled", "1")
	do("/single", "b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
	do("/off", "x-b3-sampled", "0")
	testutil.Eventually(t, 5*time.Second, "four spans at the collector", func() bool { return len(zk.all()) >= 4 })
	time.Sleep(100 * time.Millisecond)
	spans := map[string]map[string]any{}
	for _, s := range zk.all() {
		tags, _ := s["tags"].(map[string]any)
		u, _ := tags["http.url"].(string)
		spans[u[strings.LastIndex(u, "/"):]] = s
	}
	if len(spans) != 4 || spans["/off"] != nil {
		t.Fatalf("spans for %v, want /new /fail /cont /single", keys(spans))
	}
	mu.Lock()
	defer mu.Unlock()
	// A new trace: the upstream continues the span.
	s := spans["/new"]
	h := seen["/new"]
	if h.Get("x-b3-traceid") != s["traceId"] || h.Get("x-b3-spanid") != s["id"] || h.Get("x-b3-sampled") != "1" || s["parentId"] != nil {
		t.Errorf("/new: span %v, upstream B3 %v", s, h)
	}
	tags := s["tags"].(map[string]any)
	// upstream_cluster is the cluster's name, upstream_cluster.name its
	// alt_stat_name; node_id and zone are the node's.
	if s["kind"] != "SERVER" || s["name"] != "ingress" || tags["http.status_code"] != "200" || tags["http.method"] != "GET" ||
		tags["upstream_cluster"] != "backend" || tags["upstream_cluster.name"] != "backend_stats" || tags["node_id"] != "gw-1" ||
		tags["zone"] != "z1" || tags["downstream_cluster"] != "-" || tags["guid:x-request-id"] != h.Get("x-request-id") ||
		s["localEndpoint"].(map[string]any)["serviceName"] != "gateway" || tags["mesh"] != "strait-test" || tags["tenant"] != "acme" {
		t.Errorf("/new span: %v", s)
	}
	if d, _ := s["duration"].(float64); d <= 0 {
		t.Errorf("/new duration %v", s["duration"])
	}
	if tags := spans["/fail"]["tags"].(map[string]any); tags["http.status_code"] != "503" || tags["error"] != "true" || tags["tenant"] != "none" {
		t.Errorf("/fail span tags: %v", tags)
	}
	// A client's context: the span is the client's, shared.
	s, h = spans["/cont"], seen["/cont"]
	if s["traceId"] != "463ac35c9f6413ad48485a3953bb6124" || s["id"] != "a2fb4a1d1a96d312" || s["parentId"] != "0020000000000001" || s["shared"] != true ||
		h.Get("x-b3-traceid") != "463ac35c9f6413ad48485a3953bb6124" || h.Get("x-b3-spanid") != "a2fb4a1d1a96d312" {
		t.Errorf("/cont: span %v, upstream B3 %v", s, h)
	}
	s, h = spans["/single"], seen["/single"]
	if s["traceId"] != "80f198ee56343ba864fe8b2a57d3eff7" || s["id"] != "e457b5a2e4d86bd1" || h.Get("b3") != "" || h.Get("x-b3-traceid") != "80f198ee56343ba864fe8b2a57d3eff7" {
		t.Errorf("/single: span %v, upstream %v", s, h)
	}
	// Not sampled: no span, but the upstream gets a context of ours that
	// says so (a new trace, as the client gave none), as from Envoy.
	if h := seen["/off"]; h.Get("x-b3-sampled") != "0" || len(h.Get("x-b3-traceid")) != 16 || h.Get("x-b3-spanid") == "" {
		t.Errorf("/off: upstream B3 %v, want a new unsampled context", h)
	}
	zk.mu.Lock()
	if zk.hosts[0] != "zipkin.example" {
		t.Errorf("collector Host %q, want collector_hostname", zk.hosts[0])
	}
	zk.mu.Unlock()
	if n := p.stat("tracing.zipkin.spans_sent"); n != 4 {
		t.Errorf("tracing.zipkin.spans_sent %d", n)
	}
}

// TestZipkinSampledHeader: an incoming B3 sampling state overrides the
// connection manager's decision: with random_sampling 0, a request whose
// x-b3-sampled is 1 is traced (its span recorded), one without B3 is not
// (the upstream gets a context of ours marked not sampled).
func TestZipkinSampledHeader(t *testing.T) {
	zk := startZipkin(t)
	var mu sync.Mutex
	seen := map[string]http.Header{}
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Clone()
		mu.Unlock()
	}, false)
	y := httpBootstrap(up, routeCfg{hcmOpts: zipkinTracing(0, "")}, "")
	p := startProxy(t, flushEachSpan(withCollector(y, "zipkin", zk.addr, false), "tracing.zipkin.min_flush_spans"))
	doReq(t, "GET", p.url("ingress")+"/plain", "")
	doReq(t, "GET", p.url("ingress")+"/forced", "", "x-b3-sampled", "1")
	testutil.Eventually(t, 5*time.Second, "the forced span", func() bool { return len(zk.all()) >= 1 })
	time.Sleep(100 * time.Millisecond)
	spans := zk.all()
	if len(spans) != 1 || !strings.HasSuffix(spans[0]["tags"].(map[string]any)["http.url"].(string), "/forced") {
		t.Fatalf("spans %v, want only /forced's", spans)
	}
	mu.Lock()
	defer mu.Unlock()
	if h := seen["/forced"]; h.Get("x-b3-sampled") != "1" || h.Get("x-b3-traceid") != spans[0]["traceId"] {
		t.Errorf("/forced: upstream B3 %v", h)
	}
	if h := seen["/plain"]; h.Get("x-b3-sampled") != "0" || h.Get("x-b3-traceid") == "" {
		t.Errorf("/plain: upstream B3 %v, want our context, not sampled", h)
	}
}

// zipkinTracing is a connection manager's tracing block: random_sampling
// percent, the fields in extra (whole YAML lines), and a Zipkin tracer
// posting to the cluster "zipkin" (withCollector).
func zipkinTracing(sampling int, extra string) string {
	return fmt.Sprintf(`          tracing:
            random_sampling: { value: %d }
%s            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON`, sampling, extra)
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestIstioGatewayTracing: Istio's mesh config names a zipkin tracing
// provider; pilot configures Strait's connection manager with
// envoy.tracers.zipkin and its own custom tags, and the spans of
// requests through the gateway reach the collector, the upstream
// continuing them.
func TestIstioGatewayTracing(t *testing.T) {
	zk := startZipkin(t)
	var mu sync.Mutex
	var upTrace, upSpan string
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upTrace, upSpan = r.Header.Get("x-b3-traceid"), r.Header.Get("x-b3-spanid")
		mu.Unlock()
		w.Write([]byte("traced"))
	}, false)
	_, ps, _ := net.SplitHostPort(closedPort(t))
	port := 0
	fmt.Sscan(ps, &port)
	cfg := istioBase(port, up) + istioRoute + serviceEntry("zipkin", "zipkin.istio-system.svc.cluster.local", 9411, zk.addr)
	meshCfg := `enableTracing: true
defaultConfig:
  tracing: { sampling: 100 }
extensionProviders:
- name: zipkin
  zipkin: { service: zipkin.istio-system.svc.cluster.local, port: 9411 }
defaultProviders:
  tracing: [zipkin]
`
	pilot := startPilotWith(t, cfg, "", meshCfg)
	y := flushEachSpan(istioGateway(pilot.Addr, false), "tracing.zipkin.min_flush_spans")
	proc := runStrait(t, y, 0)
	admin := "http://" + proc.admin
	url := fmt.Sprintf("http://127.0.0.1:%d/t", port)
	c := &http.Client{Timeout: 2 * time.Second}
	code, _ := awaitGateway(func() (int, string) { return body(c, url) })
	if r := rejections(t, admin); code != 200 || len(r) > 0 {
		t.Fatalf("through the gateway: %d; rejected %v\n%s", code, r, proc.stderr.String())
	}
	// Pilot asks for an upstream span of its own (spawn_upstream_span):
	// a SERVER span for the request, a CLIENT span under it for the
	// upstream request, whose context the upstream gets.
	testutil.Eventually(t, 10*time.Second, "two spans at the collector", func() bool { return len(zk.all()) >= 2 })
	var server, client map[string]any
	for _, s := range zk.all() {
		switch s["kind"] {
		case "SERVER":
			server = s
		case "CLIENT":
			client = s
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if server == nil || client == nil || server["traceId"] != upTrace || client["traceId"] != upTrace ||
		client["parentId"] != server["id"] || client["id"] != upSpan {
		t.Fatalf("server span %v\nclient span %v\nupstream B3 %s/%s", server, client, upTrace, upSpan)
	}
	tags := server["tags"].(map[string]any)
	if tags["http.status_code"] != "200" || !strings.Contains(fmt.Sprint(server["name"]), "backend.example.com") {
		t.Errorf("server span: %v", server)
	}
	t.Logf("spans from pilot's config:\n%v\n%v", server, client)
}

// TestZipkinUpstreamSpans: with spawn_upstream_span each upstream
// attempt has a CLIENT span of its own under the request's SERVER span,
// ended with what that attempt's host answered (a retried 503, then the
// 200).
func TestZipkinUpstreamSpans(t *testing.T) {
	// The connection manager's spawn_upstream_span, or the router's
	// start_child_span: the same spans.
	for _, how := range []string{"spawn_upstream_span", "start_child_span"} {
		t.Run(how, func(t *testing.T) { zipkinUpstreamSpans(t, how == "start_child_span") })
	}
}

func zipkinUpstreamSpans(t *testing.T, routerChild bool) {
	zk := startZipkin(t)
	var mu sync.Mutex
	n := 0
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			w.WriteHeader(503)
		}
	}, false)
	y := httpBootstrap(up, routeCfg{hcmOpts: zipkinTracing(100, `            spawn_upstream_span: true
`), routes: `              - match: { prefix: "/" }
                route: { cluster: backend, retry_policy: { retry_on: 5xx, num_retries: 1 } }`}, "")
	if routerChild {
		y = strings.Replace(y, "            spawn_upstream_span: true\n", "", 1)
		y = strings.Replace(y, "router.v3.Router }", "router.v3.Router, start_child_span: true }", 1)
	}
	y = withCollector(y, "zipkin", zk.addr, false)
	y = flushEachSpan(y, "tracing.zipkin.min_flush_spans")
	p := startProxy(t, y)
	if code, _ := get(t, p.url("ingress")+"/retry"); code != 200 {
		t.Fatalf("retried request: %d", code)
	}
	testutil.Eventually(t, 5*time.Second, "three spans", func() bool { return len(zk.all()) >= 3 })
	var server map[string]any
	var clients []map[string]any
	for _, s := range zk.all() {
		if s["kind"] == "SERVER" {
			server = s
		} else {
			clients = append(clients, s)
		}
	}
	if server == nil || len(clients) != 2 {
		t.Fatalf("spans: %v", zk.all())
	}
	codes := map[string]bool{}
	for _, c := range clients {
		if c["parentId"] != server["id"] || c["traceId"] != server["traceId"] || c["kind"] != "CLIENT" || c["name"] != "router backend egress" {
			t.Errorf("client span %v under server %v", c, server)
		}
		// An attempt's span: its host is the peer; the request's own
		// tags stay on the request's span.
		tags := c["tags"].(map[string]any)
		codes[tags["http.status_code"].(string)] = true
		if tags["peer.address"] != up || tags["upstream_address"] != up || tags["upstream_cluster"] != "backend" ||
			tags["http.url"] != nil || tags["request_size"] != nil || (tags["http.status_code"] == "503") != (tags["error"] == "true") {
			t.Errorf("attempt span tags: %v", tags)
		}
	}
	if !codes["503"] || !codes["200"] {
		t.Errorf("attempt spans' statuses %v, want 503 and 200", codes)
	}
}

// TestZipkinEgress: on an OUTBOUND listener (without upstream spans) a
// traced request's span is the CLIENT side of the call, "egress", under
// the caller's span rather than sharing its id.
func TestZipkinEgress(t *testing.T) {
	// With the router's start_child_span the request's span stays the
	// egress one (only the connection manager's spawn_upstream_span makes
	// it the SERVER side), and a child span follows it.
	for _, child := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "start_child_span"}[child], func(t *testing.T) { zipkinEgress(t, child) })
	}
}

func zipkinEgress(t *testing.T, child bool) {
	zk := startZipkin(t)
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {}, false)
	y := httpBootstrap(up, routeCfg{hcmOpts: zipkinTracing(100, "")}, "")
	y = strings.Replace(y, "  - name: ingress\n", "  - name: ingress\n    traffic_direction: OUTBOUND\n", 1)
	want := 1
	if child {
		y = strings.Replace(y, "router.v3.Router }", "router.v3.Router, start_child_span: true }", 1)
		want = 2
	}
	y = withCollector(y, "zipkin", zk.addr, false)
	y = flushEachSpan(y, "tracing.zipkin.min_flush_spans")
	if !strings.Contains(y, "traffic_direction: OUTBOUND") {
		t.Fatal("no OUTBOUND listener in the config")
	}
	p := startProxy(t, y)
	doReq(t, "GET", p.url("ingress")+"/e", "", "x-b3-traceid", "463ac35c9f6413ad", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-sampled", "1")
	testutil.Eventually(t, 5*time.Second, "the spans", func() bool { return len(zk.all()) >= want })
	time.Sleep(50 * time.Millisecond)
	// Envoy names an OUTBOUND listener's spans "egress HOST".
	var egress map[string]any
	for _, s := range zk.all() {
		if s["name"] == "egress "+strings.TrimPrefix(p.url("ingress"), "http://") {
			egress = s
		}
	}
	if s := egress; s == nil || s["kind"] != "CLIENT" || s["parentId"] != "a2fb4a1d1a96d312" || s["id"] == "a2fb4a1d1a96d312" || s["shared"] != nil {
		t.Fatalf("egress span: %v (all %v)", s, zk.all())
	}
	if n := len(zk.all()); n != want {
		t.Errorf("%d spans, want %d: %v", n, want, zk.all())
	}
}

// withCollector adds a static cluster named name at addr (HTTP/2 with
// prior knowledge when h2: gRPC) to a bootstrap.
func withCollector(y, name, addr string, h2 bool) string {
	h, p, _ := net.SplitHostPort(addr)
	opts := ""
	if h2 {
		opts = `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
`
	}
	return strings.Replace(y, "  clusters:\n", fmt.Sprintf(`  clusters:
  - name: %s
    connect_timeout: 1s
%s    load_assignment:
      cluster_name: %s
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: %s, port_value: %s } } } } ] } ]
`, name, opts, name, h, p), 1)
}

// flushEachSpan makes a tracer's reporter send each span at once (its
// min_flush_spans runtime key set to 1).
func flushEachSpan(y, key string) string {
	return "layered_runtime:\n  layers:\n  - name: static\n    static_layer: { " + key + ": 1 }\n" + y
}
