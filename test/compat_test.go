package test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Configs that Envoy accepts and Strait must too (issue 10, item 4).

// TestDeprecatedClusterHTTP2Options: a cluster's deprecated
// http2_protocol_options still selects HTTP/2 towards the upstream, as
// in Envoy (it is mapped to typed_extension_protocol_options).
func TestDeprecatedClusterHTTP2Options(t *testing.T) {
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.Proto) }, true)
	p := startProxy(t, httpBootstrap(up, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend }`}, "    http2_protocol_options: {}"))
	if code, got := get(t, p.url("ingress")+"/"); code != 200 || got != "HTTP/2.0" {
		t.Fatalf("got %d %q, want HTTP/2.0 upstream", code, got)
	}
	y := httpBootstrap(up, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend }`}, `    http2_protocol_options: {}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }`)
	if _, err := buildServer(y); err == nil || !strings.Contains(err.Error(), "cannot be set with the deprecated") {
		t.Fatalf("both forms: err %v", err)
	}
}

// TestUnnamedListeners: listeners without a name are named by Strait
// (Envoy gives each a unique name) instead of clashing as duplicates.
func TestUnnamedListeners(t *testing.T) {
	up := named(t, "up")
	one := `
  - address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains: { filters: { name: t, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: %s, cluster: backend } } }`
	host, port, _ := net.SplitHostPort(up)
	p := startProxy(t, `
static_resources:
  listeners:`+fmt.Sprintf(one, "a")+fmt.Sprintf(one, "b")+`
  clusters:
  - name: backend
    connect_timeout: { seconds: 1 }
    load_assignment: { cluster_name: backend, endpoints: { lb_endpoints: { endpoint: { address: { socket_address: { address: `+host+`, port_value: `+port+` } } } } } }
`)
	if n := len(p.srv.StaticListenerNames()); n != 2 {
		t.Fatalf("%d listeners", n)
	}
	for _, name := range p.srv.StaticListenerNames() {
		if got := tcpGet(p.addr(name)); got != "up" {
			t.Fatalf("listener %s answered %q", name, got)
		}
	}
}

// TestAdminAccessLogPath: the deprecated admin.access_log_path logs each
// admin request, in Envoy's default format.
func TestAdminAccessLogPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.log")
	up := named(t, "up")
	y := strings.Replace(httpBootstrap(up, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend }`}, ""), "admin:\n", "admin:\n  access_log_path: "+path+"\n", 1)
	if !strings.Contains(y, path) {
		t.Fatal("no admin block in the bootstrap")
	}
	p := startProxy(t, y)
	get(t, p.admin()+"/ready")
	get(t, p.admin()+"/no-such-page")
	p.srv.FlushLogs()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"GET /ready HTTP/1.1" 200`) || !strings.Contains(lines[1], `"GET /no-such-page HTTP/1.1" 404`) {
		t.Fatalf("admin access log:\n%s", b)
	}
	if _, err := buildServer(strings.Replace(y, path, "/no/such/dir/admin.log", 1)); err == nil || !strings.Contains(err.Error(), "admin.access_log_path") {
		t.Fatalf("unwritable log: err %v", err)
	}
}

// TestADSWithoutTransportAPIVersion: an ads_config without
// transport_api_version means V3, as in Envoy; V2 is refused.
func TestADSWithoutTransportAPIVersion(t *testing.T) {
	base := xdsBootstrap("127.0.0.1:1", false)
	without := strings.Replace(base, "    transport_api_version: V3\n", "", 1)
	if without == base {
		t.Fatal("no transport_api_version in the bootstrap")
	}
	if _, err := buildServer(without); err != nil {
		t.Fatalf("without transport_api_version: %v", err)
	}
	_, err := buildServer(strings.Replace(base, "transport_api_version: V3\n", "transport_api_version: V2\n", 1))
	if err == nil || !strings.Contains(err.Error(), "dynamic_resources.ads_config.transport_api_version") {
		t.Fatalf("V2: err %v", err)
	}
	_, err = buildServer(strings.Replace(base, "api_type: GRPC", "api_type: GRPC\n    rate_limit_settings: {}", 1))
	if err == nil || !strings.Contains(err.Error(), "dynamic_resources.ads_config.rate_limit_settings: not supported yet") {
		t.Fatalf("an unimplemented ads_config field: err %v", err)
	}
}

// TestClusterBufferLimit: a cluster's per_connection_buffer_limit_bytes
// bounds each upstream read; a head and body far larger than it still
// arrive whole.
func TestClusterBufferLimit(t *testing.T) {
	big := strings.Repeat("0123456789", 10000)
	up := serveHTTP(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("x-long", strings.Repeat("h", 2000))
		fmt.Fprint(w, big)
	}, false)
	p := startProxy(t, httpBootstrap(up, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend }`}, "    per_connection_buffer_limit_bytes: 64"))
	if code, got := get(t, p.url("ingress")+"/"); code != 200 || got != big {
		t.Fatalf("%d, %d bytes, want 200 and %d bytes", code, len(got), len(big))
	}
}
