package test

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestIstioGatewayRewrite: VirtualService regex, exact and header
// matches, URI and authority rewrites and a redirect, through pilot: the
// upstream sees the rewritten path and host.
func TestIstioGatewayRewrite(t *testing.T) {
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Host, r.URL.Path)
	}, false)
	_, port, _ := net.SplitHostPort(closedPort(t))
	cfg := gatewayHead + fmt.Sprintf(`  - port: { number: %s, name: http, protocol: HTTP }
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: route, namespace: istio-system }
spec:
  hosts: ["*"]
  gateways: [istio-system/ingress]
  http:
  - match: [ { uri: { regex: "/item/[0-9]+" } } ]
    rewrite: { uri: /item-by-id, authority: items.internal }
    route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
  - match: [ { uri: { prefix: /old/ } } ]
    rewrite: { uri: /new/ }
    route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
  - match: [ { uri: { exact: /moved } } ]
    redirect: { uri: /here, redirectCode: 302 }
  - match: [ { headers: { x-version: { exact: v2 } } } ]
    rewrite: { uri: /v2 }
    route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
  - route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
`, port) + serviceEntry("backend", "backend.example.com", 18080, up)
	pilot := startPilot(t, cfg)
	proc := runStrait(t, istioGateway(pilot.Addr, false), 0)
	admin := "http://" + proc.admin
	c := &http.Client{Timeout: 3 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "http://127.0.0.1:" + port
	do := func(path string, kv ...string) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Host = "shop.example.com"
		for i := 0; i+1 < len(kv); i += 2 {
			req.Header.Set(kv[i], kv[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error(), nil
		}
		defer resp.Body.Close()
		b := make([]byte, 256)
		n, _ := resp.Body.Read(b)
		return resp.StatusCode, string(b[:n]), resp.Header
	}
	code, got := awaitGateway(func() (int, string) { code, got, _ := do("/plain"); return code, got })
	if code != 200 || got != "shop.example.com /plain" {
		t.Fatalf("through the gateway: %d %q; rejected %v\n%s", code, got, rejections(t, admin), proc.stderr.String())
	}
	for _, tc := range []struct {
		path, hdr, want string
	}{
		{"/item/42", "", "items.internal /item-by-id"},
		{"/item/x42", "", "shop.example.com /item/x42"}, // the regex matches the whole path only
		{"/old/a/b", "", "shop.example.com /new/a/b"},
		// No uri match: pilot matches prefix "/" and rewrites it, so the
		// path's tail follows (as Envoy does; Istio's docs say so).
		{"/any", "v2", "shop.example.com /v2any"},
	} {
		var kv []string
		if tc.hdr != "" {
			kv = []string{"x-version", tc.hdr}
		}
		if code, got, _ := do(tc.path, kv...); code != 200 || got != tc.want {
			t.Errorf("%s (x-version %q): %d %q, want %q", tc.path, tc.hdr, code, got, tc.want)
		}
	}
	if code, _, h := do("/moved"); code != 302 || h.Get("Location") != "http://shop.example.com/here" {
		t.Errorf("redirect: %d %v", code, h)
	}
	if r := rejections(t, admin); len(r) > 0 {
		t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
	}
}
