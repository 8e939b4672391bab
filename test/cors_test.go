package test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCORS: envoy.filters.http.cors with CorsPolicy per virtual host and
// route (a route's policy takes the fields it leaves unset from its
// virtual host's): preflights answered by the proxy, other requests
// marked on the way back, origins that do not match left alone (their
// preflight forwarded unless forward_not_matching_preflights is false),
// and a shadow-only policy that just counts.
func TestCORS(t *testing.T) {
	var calls atomic.Int32
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("x-upstream-method", r.Method)
	}, false)
	const cors = `type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy`
	routes := `              - match: { prefix: "/r" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.cors: { "@type": ` + cors + `, allow_origin_string_match: [ { prefix: "https://b." } ], allow_methods: "*" }
              - match: { prefix: "/off" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.cors: { "@type": ` + cors + `, filter_enabled: { default_value: { numerator: 0 } }, shadow_enabled: { default_value: { numerator: 100 } } }
              - match: { prefix: "/strict" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.cors: { "@type": ` + cors + `, forward_not_matching_preflights: false }
              - match: { prefix: "/" }
                route: { cluster: backend }`
	y := httpBootstrap(addr, routeCfg{routes: routes}, "")
	y = strings.Replace(y, `              domains: ["*"]`, `              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.cors: { "@type": `+cors+`, allow_origin_string_match: [ { exact: "https://a.example" } ], allow_methods: "GET,POST", allow_headers: "x-a", expose_headers: "x-e", max_age: "600", allow_credentials: true }`, 1)
	y = strings.Replace(y, `          http_filters:
`, `          http_filters:
          - name: envoy.filters.http.cors
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }
`, 1)
	p := startProxy(t, y)
	do := func(method, path string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, p.url("ingress")+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	check := func(what string, resp *http.Response, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Fatalf("%s: %s = %q, want %q (%v)", what, k, got, v, resp.Header)
			}
		}
	}
	n := calls.Load()
	resp := do("OPTIONS", "/", "origin", "https://a.example", "access-control-request-method", "PUT")
	check("preflight", resp, map[string]string{"access-control-allow-origin": "https://a.example",
		"access-control-allow-methods": "GET,POST", "access-control-allow-headers": "x-a", "access-control-max-age": "600",
		"access-control-allow-credentials": "true", "content-length": "0", "access-control-expose-headers": ""})
	if resp.StatusCode != 200 || calls.Load() != n {
		t.Fatalf("preflight: status %d, upstream called %d times", resp.StatusCode, calls.Load()-n)
	}
	resp = do("GET", "/", "origin", "https://a.example")
	check("simple request", resp, map[string]string{"access-control-allow-origin": "https://a.example",
		"access-control-expose-headers": "x-e", "access-control-allow-credentials": "true", "x-upstream-method": "GET"})
	resp = do("GET", "/", "origin", "https://evil.example")
	check("origin not allowed", resp, map[string]string{"access-control-allow-origin": "", "x-upstream-method": "GET"})
	resp = do("OPTIONS", "/", "origin", "https://evil.example", "access-control-request-method", "PUT")
	check("preflight not allowed", resp, map[string]string{"access-control-allow-origin": "", "x-upstream-method": "OPTIONS"})
	n = calls.Load()
	resp = do("OPTIONS", "/strict", "origin", "https://evil.example", "access-control-request-method", "PUT")
	check("strict preflight", resp, map[string]string{"access-control-allow-origin": "", "x-upstream-method": "",
		"access-control-allow-methods": "GET,POST"})
	if calls.Load() != n {
		t.Fatal("forward_not_matching_preflights false: the preflight went upstream")
	}
	resp = do("OPTIONS", "/r", "origin", "https://b.example", "access-control-request-method", "PATCH")
	check("route policy over the virtual host's", resp, map[string]string{"access-control-allow-origin": "https://b.example",
		"access-control-allow-methods": "PATCH", "access-control-allow-headers": "x-a", "access-control-allow-credentials": "true"})
	resp = do("GET", "/r", "origin", "https://a.example")
	check("the route's origins replace the virtual host's", resp, map[string]string{"access-control-allow-origin": ""})
	valid := p.stat("http.ingress.cors.origin_valid")
	resp = do("GET", "/off", "origin", "https://a.example")
	check("shadow only", resp, map[string]string{"access-control-allow-origin": "", "x-upstream-method": "GET"})
	if p.stat("http.ingress.cors.origin_valid") != valid+1 {
		t.Fatal("the shadow policy did not count the origin")
	}
	resp = do("GET", "/")
	check("no origin", resp, map[string]string{"access-control-allow-origin": "", "x-upstream-method": "GET"})
	if v, i := p.stat("http.ingress.cors.origin_valid"), p.stat("http.ingress.cors.origin_invalid"); v != 4 || i != 4 {
		t.Fatalf("origin_valid %d, origin_invalid %d; want 4, 4", v, i)
	}
}
