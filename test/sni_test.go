package test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// Listener filters and filter-chain matching on what they find (issue 12,
// listener side): tls_inspector (SNI, transport protocol, ALPN),
// http_inspector, listener_filters_timeout.

const tlsInspector = `    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
`

// hcmFilter is an HTTP connection manager routing everything to backend,
// or answering body itself when body is set.
func hcmFilter(prefix, body string) string {
	action := "route: { cluster: backend }"
	if body != "" {
		action = fmt.Sprintf("direct_response: { status: 200, body: { inline_string: %s } }", body)
	}
	return fmt.Sprintf(`      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          route_config: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, %s } ] } ] }
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
`, prefix, action)
}

func tcpProxyFilter(cluster string) string {
	return fmt.Sprintf(`      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: %s, cluster: %s }
`, cluster, cluster)
}

func tlsSocket(cert, key string) string {
	return `      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [ { certificate_chain: { filename: ` + cert + ` }, private_key: { filename: ` + key + ` } } ]
`
}

func staticCluster(name, addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`  - name: %s
    connect_timeout: 1s
    load_assignment:
      cluster_name: %s
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: %s, port_value: %s } } } } ] } ]
`, name, name, host, port)
}

// peerName handshakes with addr offering sni and returns the common name
// of the certificate it got.
func peerName(addr, sni string, pool *x509.CertPool) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: sni, RootCAs: pool, InsecureSkipVerify: pool == nil})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// TestSNIFilterChains: tls_inspector reads the SNI, and the chain with
// the most specific server name terminates TLS with its certificate: an
// exact name, then a wildcard, then the TLS chain without names;
// plaintext HTTP on the same port reaches the raw_buffer chain; curl
// gets h2 and HTTP/1.1 through a chain chosen after the bytes were read.
func TestSNIFilterChains(t *testing.T) {
	pki := newPKI(t)
	ac, ak := pki.issue(t, "a", false, "a.example")
	wc, wk := pki.issue(t, "wild", false, "*.wild.example")
	dc, dk := pki.issue(t, "default", false, "localhost")
	up := testutil.StartUpstream(t)
	y := `
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
` + tlsInspector + `    filter_chains:
    - filter_chain_match: { server_names: [a.example] }
` + tlsSocket(ac, ak) + hcmFilter("a", "") + `    - filter_chain_match: { server_names: ["*.wild.example"] }
` + tlsSocket(wc, wk) + hcmFilter("wild", "") + `    - filter_chain_match: { transport_protocol: tls }
` + tlsSocket(dc, dk) + hcmFilter("default", "") + `    - filter_chain_match: { transport_protocol: raw_buffer }
` + hcmFilter("plain", "") + `  clusters:
` + staticCluster("backend", up.Addr)
	p := startProxy(t, y)
	addr := p.addr("ingress")
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	for sni, want := range map[string]string{"a.example": "a", "x.wild.example": "wild", "localhost": "default"} {
		got, err := peerName(addr, sni, pool)
		if err != nil || got != want {
			t.Errorf("SNI %s: certificate %q (%v), want %q", sni, got, err, want)
		}
	}
	// Envoy's wildcards match deeper names too (the certificate does not:
	// the client is told not to check it).
	if got, err := peerName(addr, "deep.x.wild.example", nil); err != nil || got != "wild" {
		t.Errorf("SNI deep.x.wild.example: certificate %q (%v), want wild", got, err)
	}
	if code, body := get(t, "http://"+addr+"/plain"); code != 200 || body != "ok /plain" {
		t.Fatalf("plaintext on the TLS port: %d %q", code, body)
	}
	_, port, _ := net.SplitHostPort(addr)
	for _, proto := range []string{"--http1.1", "--http2"} {
		out, err := exec.Command("curl", "-sS", proto, "--cacert", pki.caFile, "--resolve", "a.example:"+port+":127.0.0.1",
			"-w", " %{http_version}", "https://a.example:"+port+"/sni").CombinedOutput()
		want := map[string]string{"--http1.1": "ok /sni 1.1", "--http2": "ok /sni 2"}[proto]
		if err != nil || string(out) != want {
			t.Fatalf("curl %s: %q (%v), want %q", proto, out, err, want)
		}
	}
	for name, want := range map[string]int64{"http.a.downstream_rq_total": 2, "http.plain.downstream_rq_total": 1,
		"http.a.downstream_cx_http2_total": 1, "tls_inspector.tls_found": 6, "tls_inspector.sni_found": 6, "tls_inspector.alpn_found": 2} {
		if got := p.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestSNIPassthrough: TLS passes through tcp_proxy untouched to the
// upstream its SNI names (the certificate is the upstream's own), under
// the suite's I/O model; an SNI no chain names is refused.
func TestSNIPassthrough(t *testing.T) {
	pki := newPKI(t)
	ac, ak := pki.issue(t, "upstream-a", false, "a.example")
	bc, bk := pki.issue(t, "upstream-b", false, "b.example")
	y := `
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
` + tlsInspector + `    filter_chains:
    - filter_chain_match: { server_names: [a.example] }
` + tcpProxyFilter("a") + `    - filter_chain_match: { server_names: [b.example] }
` + tcpProxyFilter("b") + `  clusters:
` + staticCluster("a", tlsUpstream(t, ac, ak)) + staticCluster("b", tlsUpstream(t, bc, bk))
	p := startProxy(t, y)
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	for sni, want := range map[string]string{"a.example": "upstream-a", "b.example": "upstream-b"} {
		got, err := peerName(p.addr("ingress"), sni, pool)
		if err != nil || got != want {
			t.Errorf("SNI %s: certificate %q (%v), want %q", sni, got, err, want)
		}
	}
	if _, err := peerName(p.addr("ingress"), "c.example", pool); err == nil {
		t.Error("an SNI no chain names got a handshake")
	}
	if got := p.stat("listener.127.0.0.1:0.no_filter_chain_match"); got != 1 {
		// the stat scope is the configured address
		t.Errorf("no_filter_chain_match = %d, want 1", got)
	}
}

// greeter is a server-first upstream: it writes hello on accept.
func greeter(t *testing.T) string {
	return testutil.StartTCP(t, func(c net.Conn) {
		io.WriteString(c, "hello\n")
		io.Copy(io.Discard, c)
		c.Close()
	})
}

// TestListenerFiltersTimeout: a client that sends nothing is closed at
// listener_filters_timeout, or, with continue_on_listener_filters_timeout,
// handed to its chain as it is (a server-first protocol through
// tcp_proxy works), under the suite's I/O model.
func TestListenerFiltersTimeout(t *testing.T) {
	up := greeter(t)
	listener := func(name, extra string) string {
		return `  - name: ` + name + `
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    listener_filters_timeout: 0.3s
` + extra + tlsInspector + `    filter_chains:
    - filter_chain_match: { transport_protocol: raw_buffer }
` + tcpProxyFilter("greeter")
	}
	y := `
static_resources:
  listeners:
` + listener("closing", "") + listener("continuing", "    continue_on_listener_filters_timeout: true\n") + `  clusters:
` + staticCluster("greeter", up)
	p := startProxy(t, y)
	read := func(listener string) (string, time.Duration) {
		c, err := net.Dial("tcp", p.addr(listener))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(io.LimitReader(c, 6))
		return string(b), time.Since(start)
	}
	if got, d := read("closing"); got != "" || d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("closing listener: read %q after %v, want a close at 0.3 s", got, d)
	}
	if got, d := read("continuing"); got != "hello\n" || d < 250*time.Millisecond {
		t.Errorf("continuing listener: read %q after %v, want hello after 0.3 s", got, d)
	}
	// A client that starts with plaintext is handed over at once.
	c, err := net.Dial("tcp", p.addr("closing"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hi there\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(io.LimitReader(c, 6)); string(b) != "hello\n" {
		t.Errorf("plaintext client: %q", b)
	}
	if got := p.stat("listener.127.0.0.1:0.downstream_pre_cx_timeout"); got != 2 {
		t.Errorf("downstream_pre_cx_timeout = %d, want 2", got)
	}
}

// TestHTTPInspector: http_inspector tells HTTP/1.1 from HTTP/2 with prior
// knowledge (h2c), and application_protocols chooses the chain.
func TestHTTPInspector(t *testing.T) {
	y := `
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    listener_filters:
    - name: envoy.filters.listener.http_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }
    filter_chains:
    - filter_chain_match: { application_protocols: [h2c] }
` + hcmFilter("h2c", "from-h2c-chain") + `    - filter_chain_match: { application_protocols: [http/1.1, http/1.0] }
` + hcmFilter("h1", "from-h1-chain") + `  clusters: []
`
	p := startProxy(t, y)
	resp, err := h2cClient().Get(p.url("ingress") + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "from-h2c-chain" || resp.ProtoMajor != 2 {
		t.Errorf("h2c: %s %q", resp.Proto, b)
	}
	if code, body := get(t, p.url("ingress")+"/"); code != 200 || body != "from-h1-chain" {
		t.Errorf("HTTP/1.1: %d %q", code, body)
	}
	out, ok := rawExchange(t, p.addr("ingress"), "GET / HTTP/1.0\r\n\r\n")
	if !ok || !strings.HasSuffix(out, "from-h1-chain") {
		t.Errorf("HTTP/1.0: %q", out)
	}
}

// TestListenerFilterConfig: listener filter fields Strait does not build
// are refused with their path; chains that match alike are refused.
func TestListenerFilterConfig(t *testing.T) {
	base := `
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector%s }
%s    filter_chains:
    - filter_chain_match: { server_names: [a.example] }
` + hcmFilter("a", "ay") + `    - filter_chain_match: { server_names: [%s] }
` + hcmFilter("b", "bee")
	cases := map[string]string{
		"typed_config.enable_ja3_fingerprinting: not supported yet":           fmt.Sprintf(base, ", enable_ja3_fingerprinting: true", "", "b.example"),
		"listener_filters[0].filter_disabled.rule: value is required":         fmt.Sprintf(base, " }\n      filter_disabled: {", "", "b.example"),
		"filter_chains[1].filter_chain_match: matches what filter_chains[0]":  fmt.Sprintf(base, "", "", "a.example"),
		"filter_chains[1].filter_chain_match.server_names[0]: \"a*.example\"": fmt.Sprintf(base, "", "", `"a*.example"`),
		"listener_filters[0]: filter \"x\": unknown listener filter":          strings.Replace(fmt.Sprintf(base, "", "", "b.example"), "- name: envoy.filters.listener.tls_inspector\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }", "- name: x", 1),
	}
	for want, y := range cases {
		if _, err := buildServer(y); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err %v, want %q", err, want)
		}
	}
	// A filter named alone is built from its empty config, as Envoy does.
	named := strings.Replace(fmt.Sprintf(base, "", "", "b.example"), "\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }", "", 1)
	if _, err := buildServer(named); err != nil {
		t.Errorf("tls_inspector by name: %v", err)
	}
}

// TestTLSInspectorHostile: bytes that start like TLS but are not a
// ClientHello (a ServerHello, a record version change, a ClientHello
// claiming 16 MiB, a truncated one then a close) go to the plaintext
// chain or are closed, never crash, and the listener keeps serving TLS
// and plaintext; under the suite's I/O model.
func TestTLSInspectorHostile(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "default", false, "localhost")
	y := `
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
` + tlsInspector + `    filter_chains:
    - filter_chain_match: { transport_protocol: tls }
` + tlsSocket(cert, key) + hcmFilter("tls", "over-tls") + `    - filter_chain_match: { transport_protocol: raw_buffer }
` + hcmFilter("plain", "plain") + `  clusters: []
`
	p := startProxy(t, y)
	addr := p.addr("ingress")
	for name, b := range map[string]string{
		"server hello":         "\x16\x03\x03\x00\x04\x02\x00\x00\x00",
		"version change":       "\x16\x03\x03\x00\x04\x01\x00\x00\xc8\x16\x03\x01\x00\x01\x00",
		"16 MiB client hello":  "\x16\x03\x01\x40\x00\x01\xff\xff\xff",
		"truncated then close": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"zero-length record":   "\x16\x03\x01\x00\x00",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, b)
		c.(*net.TCPConn).CloseWrite()
		out, _ := io.ReadAll(c) // an HTTP error, or a close
		c.Close()
		if strings.Contains(string(out), "200 OK") {
			t.Errorf("%s: answered %q", name, out)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	if got, err := peerName(addr, "localhost", pool); err != nil || got != "default" {
		t.Fatalf("TLS after the hostile bytes: %q %v", got, err)
	}
	if code, body := get(t, "http://"+addr+"/"); code != 200 || body != "plain" {
		t.Fatalf("plaintext after the hostile bytes: %d %q", code, body)
	}
}
