package test

import (
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestTransportSocketMatches: one cluster, two hosts: the endpoint whose
// metadata says tlsMode: istio is reached over mTLS (the match's
// UpstreamTlsContext: a client certificate the upstream requires, the
// upstream's chain checked against the CA), the other in plaintext (no
// match: the cluster's default, raw_buffer). Both answer; the stats count
// each match's hosts; /certs lists the match's certificate.
func TestTransportSocketMatches(t *testing.T) {
	pki := newPKI(t)
	mtls, cc, ck := mtlsUpstream(t, pki)
	plain := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello plain")) }, false)
	y := httpBootstrap(plain, routeCfg{}, `    transport_socket_matches:
    - name: mtls
      match: { tlsMode: istio }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: up.example
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cc+` }, private_key: { filename: `+ck+` } } ]
            validation_context: { trusted_ca: { filename: `+pki.caFile+` } }`)
	host, port, _ := net.SplitHostPort(mtls)
	y += `        - endpoint: { address: { socket_address: { address: ` + host + `, port_value: ` + port + ` } } }
          metadata: { filter_metadata: { envoy.transport_socket_match: { tlsMode: istio } } }
`
	p := startProxy(t, y)
	// The balancer picks at random: ask until both hosts have answered
	// (100 tries leave a chance of 2^-99 that a working host is missed).
	seen := map[string]int{}
	for i := 0; i < 100 && (seen["hello plain"] == 0 || seen["hello proxy"] == 0); i++ {
		code, body := get(t, p.url("ingress")+"/")
		if code != 200 {
			t.Fatalf("%d %q", code, body)
		}
		seen[body]++
	}
	if seen["hello plain"] == 0 || seen["hello proxy"] == 0 {
		t.Fatalf("answers: %v (want both the plaintext host and the mTLS host, which saw the proxy's certificate)", seen)
	}
	if n := p.stat("cluster.backend.mtls.total_match_count"); n != 1 {
		t.Errorf("mtls.total_match_count = %d, want 1", n)
	}
	if n := p.stat("cluster.backend.default.total_match_count"); n != 1 {
		t.Errorf("default.total_match_count = %d, want 1", n)
	}
	if _, certs := get(t, p.admin()+"/certs"); !strings.Contains(certs, cc) {
		t.Errorf("/certs does not list the match's client certificate:\n%s", certs)
	}
}
