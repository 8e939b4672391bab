package test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
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
	"google.golang.org/protobuf/encoding/protojson"
)

// scopedListener is an HTTP listener whose routes are scoped by the
// "tenant" element of x-tenant-info ("user=1; tenant=red"), scopes from
// SRDS and their route configurations from RDS, both from src (JSON).
func scopedListener(t *testing.T, addr, src string) *listenerv3.Listener {
	host, port, _ := net.SplitHostPort(addr)
	return fromJSON(t, &listenerv3.Listener{}, `{"name":"scoped","address":{"socket_address":{"address":"`+host+`","port_value":`+port+`}},
	  "filter_chains":[{"filters":[{"name":"hcm","typed_config":{
	    "@type":"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	    "stat_prefix":"scoped",
	    "scoped_routes":{"name":"tenants",
	      "scope_key_builder":{"fragments":[{"header_value_extractor":{"name":"x-tenant-info","element_separator":";","element":{"key":"tenant","separator":"="}}}]},
	      "rds_config_source":`+src+`,"scoped_rds":{"scoped_rds_config_source":`+src+`}},
	    "http_filters":[{"name":"envoy.filters.http.router","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}`)
}

func scope(t *testing.T, name, key, route string) *routev3.ScopedRouteConfiguration {
	return fromJSON(t, &routev3.ScopedRouteConfiguration{}, `{"name":"`+name+`","route_configuration_name":"`+route+`","key":{"fragments":[{"string_key":"`+key+`"}]}}`)
}

// tenantGet asks url as tenant (no header when tenant is "").
func tenantGet(url, tenant string) (int, string) {
	req, _ := http.NewRequest("GET", url, nil)
	if tenant != "" {
		req.Header.Set("x-tenant-info", "user=1; tenant="+tenant)
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 256)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, b.String()
}

// TestScopedRoutes: two scopes keyed on a header fragment route to
// different clusters; an SRDS update moves a scope and adds one; a
// request in no scope gets 404; a scope whose key another has is
// refused by name and the rest apply.
func TestScopedRoutes(t *testing.T) {
	eachMode(t, xdsModes, func(t *testing.T, cp *controlPlane, boot string) {
		red, blue := named(t, "red"), named(t, "blue")
		laddr := "127.0.0.1:" + freePort(t)
		src := `{"ads":{},"resource_api_version":"V3"}`
		if cp.source != nil {
			b, _ := protojson.Marshal(cp.source)
			src = string(b)
		}
		push := func(v string, scopes ...types.Resource) {
			cp.set(v, map[resource.Type][]types.Resource{
				resource.ListenerType:    {scopedListener(t, laddr, src)},
				resource.ScopedRouteType: scopes,
				resource.RouteType:       {testutil.XDSRoute("r-red", "cred", ""), testutil.XDSRoute("r-blue", "cblue", "")},
				resource.ClusterType:     {testutil.XDSCluster("cred"), testutil.XDSCluster("cblue")},
				resource.EndpointType:    {testutil.XDSEndpoints("cred", red), testutil.XDSEndpoints("cblue", blue)},
			})
		}
		push("1", scope(t, "s-red", "red", "r-red"), scope(t, "s-blue", "blue", "r-blue"))
		p := startProxy(t, boot)
		url := "http://" + laddr + "/"
		testutil.Eventually(t, 10*time.Second, "the red scope", func() bool {
			code, got := tenantGet(url, "red")
			return code == 200 && got == "red"
		})
		for tenant, want := range map[string]string{"blue": "200 blue", "green": "404", "": "404"} {
			code, got := tenantGet(url, tenant)
			if fmt.Sprint(code) != want && fmt.Sprintf("%d %s", code, got) != want {
				t.Fatalf("tenant %q: %d %q, want %s", tenant, code, got, want)
			}
		}
		// SRDS: red now goes to the blue routes, green appears; a fourth
		// scope reuses red's key and is refused.
		n := cp.nackCount()
		push("2", scope(t, "s-red", "red", "r-blue"), scope(t, "s-blue", "blue", "r-blue"),
			scope(t, "s-green", "green", "r-red"), scope(t, "s-twin", "red", "r-red"))
		testutil.Eventually(t, 5*time.Second, "the moved scopes", func() bool {
			c1, g1 := tenantGet(url, "red")
			c2, g2 := tenantGet(url, "green")
			return c1 == 200 && g1 == "blue" && c2 == 200 && g2 == "red"
		})
		testutil.Eventually(t, 5*time.Second, "the twin's NACK", func() bool {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			for _, r := range cp.nacks[n:] {
				if strings.Contains(r, `scoped route configuration "s-twin"`) && strings.Contains(r, "same key") {
					return true
				}
			}
			return false
		})
		if p.stat("xds.srds.update_success") < 1 {
			t.Fatalf("xds.srds.update_success = %d", p.stat("xds.srds.update_success"))
		}
	})
}

// TestInlineScopes: scoped_route_configurations_list whose scopes carry
// their route configurations needs no xDS.
func TestInlineScopes(t *testing.T) {
	red, blue := named(t, "red"), named(t, "blue")
	cluster := func(name, addr string) string {
		host, port, _ := net.SplitHostPort(addr)
		return `
  - name: ` + name + `
    connect_timeout: 1s
    load_assignment: { cluster_name: ` + name + `, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: ` + host + `, port_value: ` + port + ` } } } } ] } ] }`
	}
	scopeYAML := func(name, key, cl string) string {
		return `{ name: ` + name + `, key: { fragments: [ { string_key: ` + key + ` } ] }, route_configuration: { name: ` + name + `, virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: ` + cl + ` } } ] } ] } }`
	}
	p := startProxy(t, `
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  listeners:
  - name: scoped
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: scoped
          scoped_routes:
            name: tenants
            scope_key_builder: { fragments: [ { header_value_extractor: { name: x-tenant-info, element_separator: ";", element: { key: tenant, separator: "=" } } } ] }
            scoped_route_configurations_list:
              scoped_route_configurations: [ `+scopeYAML("s-red", "red", "cred")+`, `+scopeYAML("s-blue", "blue", "cblue")+` ]
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
  clusters:`+cluster("cred", red)+cluster("cblue", blue)+"\n")
	url := p.url("scoped") + "/"
	for tenant, want := range map[string]string{"red": "200 red", "blue": "200 blue", "green": "404 "} {
		code, got := tenantGet(url, tenant)
		if g := fmt.Sprintf("%d %s", code, got); !strings.HasPrefix(g, want) {
			t.Fatalf("tenant %q: %s, want %s", tenant, g, want)
		}
	}
}

// TestScopedListenerSecretTimeout: a listener whose only routes are
// inline (a route_config, or scopes carrying their route
// configurations) waits for nothing but its TLS secret, and for that as
// long as the secret's initial_fetch_timeout says: it stays closed at
// first, opens after 300 ms without the secret (handshakes fail), and
// serves once the secret comes.
func TestScopedListenerSecretTimeout(t *testing.T) {
	scoped := `          scoped_routes:
            name: tenants
            scope_key_builder: { fragments: [ { header_value_extractor: { name: x-tenant-info, element_separator: ";", element: { key: tenant, separator: "=" } } } ] }
            scoped_route_configurations_list:
              scoped_route_configurations:
              - { name: s-red, key: { fragments: [ { string_key: red } ] }, route_configuration: { name: s-red, virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, direct_response: { status: 200, body: { inline_string: red } } } ] } ] } }
`
	plain := `          route_config: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, direct_response: { status: 200, body: { inline_string: red } } } ] } ] }
`
	for name, routes := range map[string]string{"inline scopes": scoped, "route_config": plain} {
		t.Run(name, func(t *testing.T) {
			pki := newPKI(t)
			cert, key := pki.issue(t, "server", false, "localhost")
			cp := startControlPlane(t, "")
			laddr := "127.0.0.1:" + freePort(t)
			l := fromJSON(t, &listenerv3.Listener{}, mustJSON(t, `
name: ingress
address: { socket_address: { address: 127.0.0.1, port_value: `+strings.Split(laddr, ":")[1]+` } }
filter_chains:
- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      common_tls_context:
        tls_certificate_sds_secret_configs: [ { name: server, sds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 0.3s } } ]
  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: scoped
`+dedent(routes, 4)+`      http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
`))
			res := map[resource.Type][]types.Resource{resource.ListenerType: {l}, resource.ClusterType: {testutil.XDSCluster("c1")},
				resource.EndpointType: {testutil.XDSEndpoints("c1", "127.0.0.1:1")}}
			cp.set("1", res)
			start := time.Now()
			startProxy(t, xdsBootstrap(cp.addr, false))
			time.Sleep(time.Until(start.Add(100 * time.Millisecond)))
			if c, err := net.Dial("tcp", laddr); err == nil {
				c.Close()
				t.Fatal("the listener opened while it waited for its secret")
			}
			testutil.Eventually(t, 5*time.Second, "the listener to open with its secret given up on", func() bool {
				c, err := net.Dial("tcp", laddr)
				if err == nil {
					c.Close()
				}
				return err == nil
			})
			if d := time.Since(start); d < 300*time.Millisecond {
				t.Fatalf("opened after %v, before the 300 ms initial_fetch_timeout", d)
			}
			pool := x509.NewCertPool()
			pool.AddCert(pki.ca)
			c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
			req, _ := http.NewRequest("GET", "https://"+laddr+"/", nil)
			req.Header.Set("x-tenant-info", "tenant=red")
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
				t.Fatal("a handshake succeeded without the listener's certificate")
			}
			res[resource.SecretType] = []types.Resource{tlsSecret(t, "server", cert, key)}
			cp.set("2", res)
			testutil.Eventually(t, 5*time.Second, "an answer once the secret came", func() bool {
				c.CloseIdleConnections()
				resp, err := c.Do(req)
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode == 200 && string(b) == "red"
			})
		})
	}
}
