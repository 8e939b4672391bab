package test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/straitproxy/strait/internal/testutil"
)

// TestXDSFilterSwap: filter policies come over xDS and change without
// dropping connections (issue 13): an RDS update swaps a route's RBAC
// policy and adds mirroring under a keep-alive connection, which carries
// on and sees the new policy at once; an LDS update that changes the
// connection manager's RBAC filter and adds a network rate limit serves
// new connections with the new chain while the old connection finishes
// its request and closes gracefully.
func TestXDSFilterSwap(t *testing.T) {
	cp := startControlPlane(t, "")
	app := named(t, "app")
	mir := startMirrorServer(t, false)
	laddr := "127.0.0.1:" + freePort(t)
	listener := func(denyPrefix, netFilters string) *listenerv3.Listener {
		return fromJSON(t, &listenerv3.Listener{}, mustJSON(t, `
name: ingress
address: { socket_address: { address: 127.0.0.1, port_value: `+laddr[strings.LastIndex(laddr, ":")+1:]+` } }
filter_chains:
- filters:
`+netFilters+`  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: ingress
      rds: { route_config_name: r1, config_source: { ads: {}, resource_api_version: V3 } }
      http_filters:
      - name: envoy.filters.http.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
          rules: { action: DENY, policies: { p: { permissions: [ { url_path: { path: { prefix: `+denyPrefix+` } } } ], principals: [ { any: true } ] } } }
      - name: envoy.filters.http.router
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
`))
	}
	route := func(perRoute bool) *routev3.RouteConfiguration {
		extra := ""
		if perRoute {
			extra = `
    typed_per_filter_config:
      envoy.filters.http.rbac:
        "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
        rbac: { rules: { action: DENY, policies: { q: { permissions: [ { url_path: { path: { prefix: /open } } } ], principals: [ { any: true } ] } } } }
    route: { cluster: app, request_mirror_policies: [ { cluster: mirror } ] }`
		} else {
			extra = `
    route: { cluster: app }`
		}
		return fromJSON(t, &routev3.RouteConfiguration{}, mustJSON(t, `
name: r1
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: { prefix: / }`+extra))
	}
	res := func(l *listenerv3.Listener, r *routev3.RouteConfiguration) map[resource.Type][]types.Resource {
		return map[resource.Type][]types.Resource{
			resource.ListenerType: {l},
			resource.RouteType:    {r},
			resource.ClusterType:  {testutil.XDSCluster("app"), testutil.XDSCluster("mirror")},
			resource.EndpointType: {testutil.XDSEndpoints("app", app), testutil.XDSEndpoints("mirror", mir.addr)},
		}
	}
	l1 := listener("/secret", "")
	cp.set("1", res(l1, route(false)))
	p := startProxy(t, xdsBootstrap(cp.addr, false))
	waitBody(t, "http://"+laddr+"/open", "app", 10*time.Second)

	conn, err := net.Dial("tcp", laddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	get := func(path string) (int, bool) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: shop\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Close
	}
	if st, _ := get("/secret"); st != 403 {
		t.Fatalf("listener policy: /secret %d", st)
	}
	if st, _ := get("/open"); st != 200 {
		t.Fatalf("listener policy: /open %d", st)
	}

	// RDS: the route's own policy replaces the listener's, and mirrors.
	cp.set("2", res(l1, route(true)))
	testutil.Eventually(t, 5*time.Second, "the route update", func() bool {
		return p.stat("xds.rds.update_success") >= 2
	})
	if st, closing := get("/open"); st != 403 || closing {
		t.Fatalf("after RDS, same connection: /open %d (close %v), want 403 and the connection kept", st, closing)
	}
	if st, closing := get("/secret"); st != 200 || closing {
		t.Fatalf("after RDS, same connection: /secret %d (close %v), want 200", st, closing)
	}
	testutil.Eventually(t, 5*time.Second, "the mirror to see /secret", func() bool {
		for _, s := range mir.got() {
			if s.path == "/secret" && s.host == "shop-shadow" {
				return true
			}
		}
		return false
	})

	// LDS: a new chain (the listener's RBAC denies /admin instead, and a
	// network rate limit of one connection comes first).
	l2 := listener("/admin", `  - name: envoy.filters.network.local_ratelimit
    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit, stat_prefix: lim, token_bucket: { max_tokens: 1, fill_interval: 3600s } }
`)
	cp.set("3", res(l2, route(true)))
	testutil.Eventually(t, 5*time.Second, "the listener update", func() bool {
		return p.stat("listener_manager.lds.update_success") >= 2
	})
	// The old connection's requests are answered under its own chain
	// until it is drained: a response with Connection: close, as Envoy
	// (the drain reaches it a moment after the update is counted).
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, closing := get("/secret")
		if st != 200 {
			t.Fatalf("old connection after LDS: /secret %d, want 200 (its own chain)", st)
		}
		if closing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("old connection never drained after LDS")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: false}}
	if st, _ := body(c, "http://"+laddr+"/x"); st != 200 {
		t.Fatalf("new connection after LDS: %d", st)
	}
	// The new chain's rate limit allows one connection: a second one
	// (the client's keep-alive connection is the first) is closed.
	c2 := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if st, _ := body(c2, "http://"+laddr+"/x"); st != 0 {
		t.Fatalf("second connection under the new rate limit: %d", st)
	}
	if p.stat("local_ratelimit.lim.rate_limited") != 1 {
		t.Fatalf("rate_limited = %d", p.stat("local_ratelimit.lim.rate_limited"))
	}
	if cp.nackCount() != 0 {
		t.Fatalf("%d NACKs", cp.nackCount())
	}
}
