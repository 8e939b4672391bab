package test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestOriginalDstCluster: an ORIGINAL_DST cluster with use_http_header
// sends each request to the IP:port its x-envoy-original-dst-host names
// (one host per destination, made as requests come); a request without
// whose header is not an IP:port gets 503 (one without the header goes
// to its connection's original destination: upstream unit tests, as
// here that is the proxy itself). upstream_bind_config makes
// the connections from 127.0.0.6, as Istio's InboundPassthroughCluster
// does.
func TestOriginalDstCluster(t *testing.T) {
	echo := func(name string) string {
		return serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			fmt.Fprintf(w, "%s from %s", name, host)
		}, false)
	}
	a, b := echo("a"), echo("b")
	y := httpBootstrap(a, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: passthrough }`}, "")
	y = strings.Replace(y, "  clusters:\n", `  clusters:
  - name: passthrough
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
    cleanup_interval: 1s
    original_dst_lb_config: { use_http_header: true }
    upstream_bind_config: { source_address: { address: 127.0.0.6, port_value: 0 } }
`, 1)
	p := startProxy(t, y)
	url := p.url("ingress") + "/"
	for _, tc := range []struct{ dst, want string }{{a, "200 a from 127.0.0.6"}, {b, "200 b from 127.0.0.6"}, {a, "200 a from 127.0.0.6"}} {
		resp, got := doReq(t, "GET", url, "", "x-envoy-original-dst-host", tc.dst)
		if g := fmt.Sprintf("%d %s", resp.StatusCode, got); g != tc.want {
			t.Fatalf("to %s: %s, want %s", tc.dst, g, tc.want)
		}
	}
	if n := p.stat("cluster.passthrough.membership_total"); n != 2 {
		t.Errorf("membership_total %d, want 2 (a host per destination)", n)
	}
	if resp, _ := doReq(t, "GET", url, "", "x-envoy-original-dst-host", "backend.example:80"); resp.StatusCode != 503 {
		t.Errorf("an unreadable destination: %d, want 503", resp.StatusCode)
	}
	if n := p.stat("cluster.passthrough.original_dst_host_invalid"); n != 1 {
		t.Errorf("original_dst_host_invalid %d, want 1", n)
	}
}
