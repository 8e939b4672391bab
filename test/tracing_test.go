package test

import (
	"net/http"
	"strings"
	"testing"
)

// TestTracingDecision: a connection manager with a tracing block and no
// provider makes Envoy's decision for each request and packs it into
// x-request-id's 15th character (9 sampled, a forced, b client, 4 not
// traced), counted in http.<prefix>.tracing.*: a client trace id
// (client_sampling), then the id's value against random_sampling;
// overall_sampling takes it back; an id that carries a decision keeps it.
// A client's x-envoy-force-trace is dropped (no request is internal). At
// the edge (use_remote_address) the client's id is replaced.
func TestTracingDecision(t *testing.T) {
	seen := make(chan http.Header, 4)
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Clone() }, false)
	const id = "0000abcd-1111-4222-8333-444444444444" // 0xabcd % 10000 = 3981
	send := func(p *proxy, hdr ...string) (up http.Header, resp *http.Response) {
		t.Helper()
		req, _ := http.NewRequest("GET", p.url("ingress")+"/", nil)
		req.Header.Set("x-request-id", id)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-seen, resp
	}
	packed := func(c byte) string { return id[:14] + string(c) + id[15:] }
	start := func(hcm string) *proxy {
		return startProxy(t, httpBootstrap(addr, routeCfg{hcmOpts: hcm}, ""))
	}

	// 39.81% is where this id falls: 39.8 does not sample it, 39.82 does.
	p := start("          tracing: { random_sampling: { value: 39.8 } }")
	if up, _ := send(p); up.Get("x-request-id") != id {
		t.Fatalf("not sampled: the upstream saw %q", up.Get("x-request-id"))
	}
	// No request is internal (internal_address_config is refused): a
	// client's x-envoy-force-trace is dropped, as Envoy drops it.
	up, resp := send(p, "x-envoy-force-trace", "true")
	if up.Get("x-request-id") != id || up.Get("x-envoy-force-trace") != "" || resp.Header.Get("x-request-id") != "" {
		t.Fatalf("forced by a client: upstream %q %q, response %q", up.Get("x-request-id"), up.Get("x-envoy-force-trace"), resp.Header.Get("x-request-id"))
	}
	if up, _ := send(p, "x-client-trace-id", "c1"); up.Get("x-request-id") != packed('b') {
		t.Fatalf("client trace id: the upstream saw %q", up.Get("x-request-id"))
	}
	// An id that already carries a decision keeps it.
	req, _ := http.NewRequest("GET", p.url("ingress")+"/", nil)
	req.Header.Set("x-request-id", packed('9'))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if got := (<-seen).Get("x-request-id"); got != packed('9') {
		t.Fatalf("a sampled id became %q", got)
	}
	for name, want := range map[string]int64{"not_traceable": 2, "service_forced": 0, "client_enabled": 1, "random_sampling": 1} {
		if got := p.stat("http.ingress.tracing." + name); got != want {
			t.Fatalf("http.ingress.tracing.%s = %d, want %d", name, got, want)
		}
	}

	p = start("          tracing: { random_sampling: { value: 39.82 } }")
	if up, _ := send(p); up.Get("x-request-id") != packed('9') {
		t.Fatalf("sampled: the upstream saw %q", up.Get("x-request-id"))
	}
	p = start("          tracing: { random_sampling: { value: 100 }, overall_sampling: { value: 0 } }")
	if up, _ := send(p); up.Get("x-request-id") != packed('4') {
		t.Fatalf("overall sampling 0: the upstream saw %q", up.Get("x-request-id"))
	}
	p = start(`          tracing: {}
          request_id_extension: { typed_config: { "@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig, pack_trace_reason: false } }`)
	if up, _ := send(p); up.Get("x-request-id") != id || p.stat("http.ingress.tracing.random_sampling") != 1 {
		t.Fatalf("pack_trace_reason false: the upstream saw %q, sampled %d", up.Get("x-request-id"), p.stat("http.ingress.tracing.random_sampling"))
	}
	// Without a tracing block the id is left alone.
	p = start("")
	if up, _ := send(p, "x-envoy-force-trace", "1"); up.Get("x-request-id") != id {
		t.Fatalf("no tracing: the upstream saw %q", up.Get("x-request-id"))
	}
	p = start("          use_remote_address: true\n          tracing: {}\n          always_set_request_id_in_response: true")
	up, resp = send(p, "x-envoy-force-trace", "1")
	got := up.Get("x-request-id")
	if got == id || len(got) != 36 || up.Get("x-envoy-force-trace") != "" || resp.Header.Get("x-request-id") != got {
		t.Fatalf("edge: upstream id %q, force-trace %q, response id %q", got, up.Get("x-envoy-force-trace"), resp.Header.Get("x-request-id"))
	}
}

// TestTracingConfigErrors: a tracer provider not built in, a Zipkin
// tracer with a field it does not implement or a cluster not
// configured, and another request id extension are refused with their
// paths.
func TestTracingConfigErrors(t *testing.T) {
	zipkin := func(extra string) string {
		return `          tracing: { provider: { name: envoy.tracers.zipkin, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON, ` + extra + ` } } }`
	}
	for hcm, want := range map[string]string{
		`          tracing: { provider: { name: envoy.tracers.zipkin } }`: `tracing.provider.typed_config: tracer "" is not supported (supported: type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, type.googleapis.com/envoy.config.trace.v3.ZipkinConfig)`,
		`          tracing: { provider: { name: envoy.tracers.datadog, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig, collector_cluster: backend, service_name: x } } }`:                                                          "envoy.config.trace.v3.DatadogConfig\" is not supported",
		`          tracing: { provider: { name: envoy.tracers.opentelemetry, typed_config: { "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, http_service: { http_uri: { uri: "http://x/v1/traces", cluster: backend, timeout: 1s } } } } }`: "tracing.provider.typed_config.http_service: not supported yet",
		zipkin(`collector_cluster: backend, split_spans_for_request: true`):                                         "tracing.provider.typed_config.split_spans_for_request: not supported yet",
		zipkin(`collector_cluster: nosuch`):                                                                         `tracing.provider.typed_config.collector_cluster: cluster "nosuch" is not configured`,
		strings.Replace(zipkin(`collector_cluster: backend`), "HTTP_JSON", "HTTP_PROTO", 1):                         "collector_endpoint_version: HTTP_PROTO is not supported",
		`          request_id_extension: { typed_config: { "@type": type.googleapis.com/google.protobuf.Struct } }`: "request_id_extension.typed_config",
	} {
		_, err := buildServer(httpBootstrap("127.0.0.1:1", routeCfg{hcmOpts: hcm}, ""))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: got %v, want %q", hcm, err, want)
		}
	}
}
