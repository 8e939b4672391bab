package test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// envoy.filters.http.rbac end to end (issue 13): enforced and shadow
// rules, per-route overrides, and an mTLS principal (the peer
// certificate's URI SAN) checked on a TLS listener.

const rbacFilter = `          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  admin-only:
                    permissions: [ { url_path: { path: { prefix: /admin } } } ]
                    principals: [ { not_id: { header: { name: x-role, string_match: { exact: admin } } } } ]
              shadow_rules:
                action: ALLOW
                policies:
                  gets:
                    permissions: [ { header: { name: ":method", string_match: { exact: GET } } } ]
                    principals: [ { any: true } ]
              shadow_rules_stat_prefix: "audit_"
`

func TestRBACFilter(t *testing.T) {
	up := testutil.StartUpstream(t)
	routes := `              - match: { prefix: "/admin/open" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.rbac: { "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute }
              - match: { prefix: "/strict" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                    rbac: { rules: { action: ALLOW, policies: { local: { permissions: [ { any: true } ], principals: [ { remote_ip: { address_prefix: 203.0.113.0, prefix_len: 24 } } ] } } } }
              - match: { prefix: "/" }
                route: { cluster: backend }
`
	p := startProxy(t, filterBootstrap(up.Addr, rbacFilter, routes))
	base := p.url("in")
	for _, c := range []struct {
		method, path string
		hdr          []string
		code         int
	}{
		{"GET", "/public", nil, 200},
		{"GET", "/admin/users", nil, 403},
		{"GET", "/admin/users", []string{"x-role", "admin"}, 200},
		{"POST", "/admin/users", []string{"x-role", "guest"}, 403},
		{"GET", "/admin/open/x", nil, 200},                                            // per route: no rules
		{"GET", "/strict", nil, 403},                                                  // per route: its own rules
		{"GET", "/strict", []string{"x-forwarded-for", "203.0.113.7"}, 200},           // remote_ip from x-forwarded-for
		{"GET", "/strict", []string{"x-forwarded-for", "203.0.113.7, 10.0.0.1"}, 403}, // the last entry is the client
	} {
		resp, body := doReq(t, c.method, base+c.path, "", c.hdr...)
		if resp.StatusCode != c.code || c.code == 403 && body != "RBAC: access denied\n" {
			t.Errorf("%s %s %v: %d %q, want %d", c.method, c.path, c.hdr, resp.StatusCode, body, c.code)
		}
	}
	for name, want := range map[string]int64{"http.in.rbac.allowed": 3, "http.in.rbac.denied": 4,
		"http.in.rbac.audit_shadow_allowed": 3, "http.in.rbac.audit_shadow_denied": 1 /* the per-route rules have no shadow */} {
		if got := p.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestRBACPrincipal: on an mTLS listener, only the client whose
// certificate carries the allowed SPIFFE ID passes.
func TestRBACPrincipal(t *testing.T) {
	up := testutil.StartUpstream(t)
	pki := newPKI(t)
	sc, sk := pki.issue(t, "server", false, "localhost")
	good, goodKey := pki.issueWith(t, "good", true, func(c *x509.Certificate) {
		u, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/frontend")
		c.URIs = []*url.URL{u}
	})
	bad, badKey := pki.issueWith(t, "bad", true, func(c *x509.Certificate) {
		u, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/other")
		c.URIs = []*url.URL{u}
	})
	y := filterBootstrap(up.Addr, `          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  frontend:
                    permissions: [ { any: true } ]
                    principals: [ { authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/shop/sa/frontend" } } } ]
`, `              - match: { prefix: "/" }
                route: { cluster: backend }
`)
	y = strings.Replace(y, "    filter_chains:\n    - filters:\n", `    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+sc+` }, private_key: { filename: `+sk+` } } ]
            validation_context: { trusted_ca: { filename: `+pki.caFile+` } }
      filters:
`, 1)
	p := startProxy(t, y)
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	get := func(cert, key string) int {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{pair}}}}
		resp, err := c.Get("https://" + p.addr("in") + "/x")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(good, goodKey); code != 200 {
		t.Errorf("the allowed principal: %d", code)
	}
	if code := get(bad, badKey); code != 403 {
		t.Errorf("another principal: %d", code)
	}
}

// TestRBACConfigErrors: what the filter does not implement is refused
// with its path.
func TestRBACConfigErrors(t *testing.T) {
	up := testutil.StartUpstream(t)
	for _, c := range []struct{ cfg, want string }{
		{"track_per_rule_stats: true", "track_per_rule_stats: not supported yet"},
		{"rules: { action: ALLOW, policies: { p: { permissions: [ { metadata: { filter: f, path: [ { key: k } ], value: { present_match: true } } } ], principals: [ { any: true } ] } } }", "rules.policies[p].permissions[0]: metadata is not supported yet"},
		{"rules_stat_prefix: x", "rules or shadow_rules is required"},
	} {
		y := filterBootstrap(up.Addr, `          - name: envoy.filters.http.rbac
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, `+c.cfg+` }
`, `              - match: { prefix: "/" }
                route: { cluster: backend }
`)
		if _, err := buildServer(y); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "http_filters[0]") {
			t.Errorf("%s: %v, want %q", c.cfg, err, c.want)
		}
	}

	// The network filter.
	echo := testutil.StartEcho(t)
	for _, c := range []struct{ cfg, want string }{
		{`stat_prefix: nr`, "rules or shadow_rules is required"},
		{`rules: { action: DENY }`, "typed_config.stat_prefix: value length must be at least 1"},
		{`stat_prefix: nr, matcher: {}`, "matcher: not supported yet"},
		{`stat_prefix: nr, rules: { action: ALLOW, policies: { p: { permissions: [ { destination_port: 70000 } ], principals: [ { any: true } ] } } }`, "destination_port: value must be less than or equal to 65535"},
		{`stat_prefix: nr, rules: { action: ALLOW, policies: { p: { permissions: [ { any: true } ], principals: [ { direct_remote_ip: { address_prefix: 10.0.0.300, prefix_len: 8 } } ] } } }`, "direct_remote_ip"},
	} {
		y := `
static_resources:
  listeners:
` + l4Listener("net", "envoy.filters.network.rbac", `"@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, `+c.cfg, "echo") + `  clusters:
` + staticCluster("echo", echo)
		if _, err := buildServer(y); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "filters[0]") {
			t.Errorf("network: %s: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestNetworkRBAC: envoy.filters.network.rbac in front of tcp_proxy: an
// allowed source reaches the upstream; a denied one is closed before
// its first byte goes on, at once or after delay_deny; shadow rules
// count; both I/O models.
func TestNetworkRBAC(t *testing.T) {
	echo := testutil.StartEcho(t)
	listener := func(name, rbac string) string {
		return l4Listener(name, "envoy.filters.network.rbac", `"@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, `+rbac, "echo")
	}
	y := `
static_resources:
  listeners:
` + listener("open", `stat_prefix: "open.", rules: { action: ALLOW, policies: { local: { permissions: [ { destination_port_range: { start: 1, end: 65536 } } ], principals: [ { direct_remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } } ] } } }, shadow_rules: { action: DENY, policies: { all: { permissions: [ { any: true } ], principals: [ { any: true } ] } } }`) +
		listener("closed", `stat_prefix: "closed.", rules: { action: ALLOW, policies: { far: { permissions: [ { any: true } ], principals: [ { direct_remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } } ] } } }`) +
		listener("slow", `stat_prefix: "slow.", delay_deny: 0.3s, rules: { action: DENY, policies: { all: { permissions: [ { any: true } ], principals: [ { any: true } ] } } }`) + `  clusters:
` + staticCluster("echo", echo)
	p := startProxy(t, y)
	talk := func(listener string) (string, time.Duration) {
		c, err := net.Dial("tcp", p.addr(listener))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "ping")
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		return string(b), time.Since(start)
	}
	if got, _ := talk("open"); got != "ping" {
		t.Fatalf("allowed: %q", got)
	}
	// (tcp_proxy connects upstream when the connection comes, as in
	// Envoy; the denied bytes never reach it: nothing echoes back.)
	if got, _ := talk("closed"); got != "" {
		t.Fatalf("denied: %q", got)
	}
	if got, d := talk("slow"); got != "" || d < 250*time.Millisecond {
		t.Fatalf("delay_deny: %q after %v", got, d)
	}
	for name, want := range map[string]int64{"open.rbac.allowed": 1, "open.rbac.shadow_denied": 1, "closed.rbac.denied": 1, "slow.rbac.denied": 1} {
		if got := p.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}
