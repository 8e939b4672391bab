package test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestGRPCStats: envoy.filters.http.grpc_stats counts each gRPC call by
// its grpc-status (trailers, or a trailers-only answer) and its messages
// (frames cut across writes) under the route's cluster; an allowlisted
// method has its own names, the others share the names without a method;
// stats_for_all_methods names every method (dots in the service replaced
// when asked). Requests that are not gRPC count nothing.
func TestGRPCStats(t *testing.T) {
	frame := func(msg string) string { return "\x00\x00\x00\x00" + string(rune(len(msg))) + msg }
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if !strings.HasPrefix(r.Header.Get("content-type"), "application/grpc") {
			return
		}
		w.Header().Set("content-type", "application/grpc")
		if strings.HasSuffix(r.URL.Path, "/Cold") {
			w.Header().Set("grpc-status", "14")
			w.WriteHeader(200)
			return
		}
		w.Header().Set("Trailer", "grpc-status")
		w.WriteHeader(200)
		io.WriteString(w, frame("one")+frame("two"))
		w.Header().Set("grpc-status", "0")
	}, true)
	call := func(p *proxy, path string, body string) {
		t.Helper()
		req, _ := http.NewRequest("POST", p.url("ingress")+path, strings.NewReader(body))
		req.Header.Set("content-type", "application/grpc")
		req.Header.Set("te", "trailers")
		resp, err := h2cClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	withFilter := func(cfg string) string {
		y := httpBootstrap(addr, routeCfg{}, h2Upstream)
		return strings.Replace(y, `          http_filters:
`, `          http_filters:
          - name: envoy.filters.http.grpc_stats
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig, `+cfg+` }
`, 1)
	}
	p := startProxy(t, withFilter(`emit_filter_state: true, enable_upstream_stats: true, individual_method_stats_allowlist: { services: [ { name: pkg.Svc, method_names: [Hot] } ] }`))
	call(p, "/pkg.Svc/Hot", frame("a")+frame("bb")+frame("")) // three messages
	call(p, "/pkg.Svc/Cold", frame("a"))
	call(p, "/pkg.Svc/Cold", frame("a"))
	if code, _ := get(t, p.url("ingress")+"/plain"); code != 200 {
		t.Fatalf("plain request: %d", code)
	}
	p.settle()
	for name, want := range map[string]int64{
		"cluster.backend.grpc.pkg.Svc.Hot.0": 1, "cluster.backend.grpc.pkg.Svc.Hot.success": 1, "cluster.backend.grpc.pkg.Svc.Hot.total": 1,
		"cluster.backend.grpc.pkg.Svc.Hot.request_message_count": 3, "cluster.backend.grpc.pkg.Svc.Hot.response_message_count": 2,
		"cluster.backend.grpc.14": 2, "cluster.backend.grpc.failure": 2, "cluster.backend.grpc.total": 2,
		"cluster.backend.grpc.request_message_count": 2, "cluster.backend.grpc.response_message_count": 0,
		"cluster.backend.grpc.success": 0, "cluster.backend.grpc.pkg.Svc.Hot.failure": 0,
	} {
		if got := p.stat(name); got != want {
			t.Fatalf("%s = %d, want %d", name, got, want)
		}
	}
	_, out := get(t, p.admin()+"/stats?filter=upstream_rq_time")
	if !strings.Contains(out, "cluster.backend.grpc.pkg.Svc.Hot.upstream_rq_time: P50") || !strings.Contains(out, "count(1)") {
		t.Fatalf("no upstream_rq_time sample for the allowlisted method:\n%s", out)
	}

	p = startProxy(t, withFilter(`stats_for_all_methods: true, replace_dots_in_grpc_service_name: true`))
	call(p, "/pkg.Svc/Cold", frame("a"))
	p.settle()
	if got := p.stat("cluster.backend.grpc.pkg_Svc.Cold.14"); got != 1 {
		t.Fatalf("stats_for_all_methods: cluster.backend.grpc.pkg_Svc.Cold.14 = %d", got)
	}
}
