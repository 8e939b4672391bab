package test

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// Validation contexts, TLS parameters and session resumption (issue 12).

func uriSAN(s string) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		u, _ := url.Parse(s)
		c.URIs = []*url.URL{u}
	}
}

// tlsGet makes one request over a fresh TLS connection with the client
// certificate in certFile/keyFile ("" for none).
func tlsGet(addr string, pool *x509.CertPool, certFile, keyFile string) error {
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if certFile != "" {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	resp, err := c.Get("https://" + addr + "/v")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return &url.Error{Op: "GET", URL: "/v", Err: io.ErrUnexpectedEOF}
	}
	return nil
}

// TestTLSClientValidation: the downstream validation context checks a
// client's certificate: a URI SAN matcher (a SPIFFE id), a certificate
// hash pin, and a CRL that revokes one certificate.
func TestTLSClientValidation(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	goodC, goodK := pki.issueWith(t, "good", true, uriSAN("spiffe://cluster.local/ns/default/sa/good"))
	badC, badK := pki.issueWith(t, "bad", true, uriSAN("spiffe://cluster.local/ns/default/sa/bad"))
	other := newPKI(t)
	strangerC, strangerK := other.issueWith(t, "stranger", true, uriSAN("spiffe://cluster.local/ns/default/sa/good"))
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	serve := func(vc string) *proxy {
		return startProxy(t, tlsBootstrap(testutil.StartUpstream(t).Addr, `          require_client_certificate: true
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]
            validation_context: { trusted_ca: { filename: `+pki.caFile+` }`+vc+` }`))
	}

	p := serve(`, match_typed_subject_alt_names: [ { san_type: URI, matcher: { prefix: "spiffe://cluster.local/ns/default/sa/go" } } ]`)
	if err := tlsGet(p.addr("ingress"), pool, goodC, goodK); err != nil {
		t.Errorf("matching URI SAN refused: %v", err)
	}
	if tlsGet(p.addr("ingress"), pool, badC, badK) == nil {
		t.Error("a URI SAN no matcher accepts was served")
	}
	if tlsGet(p.addr("ingress"), pool, strangerC, strangerK) == nil {
		t.Error("a certificate from an untrusted CA with a matching SAN was served")
	}
	for name, want := range map[string]int64{"ssl.handshake": 1, "ssl.fail_verify_san": 1, "ssl.fail_verify_error": 1,
		"ssl.connection_error": 2, "ssl.versions.TLSv1.3": 1, "ssl.ciphers.TLS_AES_128_GCM_SHA256": 1} {
		// The server counts just after the client has its answer.
		if got, ok := waitStat(p, "listener.127.0.0.1:0."+name, 2*time.Second, func(v int64) bool { return v == want }); !ok {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}

	der, _ := pem.Decode(must(os.ReadFile(goodC)))
	sum := sha256.Sum256(der.Bytes)
	p = serve(`, verify_certificate_hash: ["` + strings.ToUpper(hex.EncodeToString(sum[:])) + `"]`)
	if err := tlsGet(p.addr("ingress"), pool, goodC, goodK); err != nil {
		t.Errorf("pinned certificate refused: %v", err)
	}
	if tlsGet(p.addr("ingress"), pool, badC, badK) == nil {
		t.Error("a certificate the pin does not name was served")
	}
	if got, ok := waitStat(p, "listener.127.0.0.1:0.ssl.fail_verify_cert_hash", 2*time.Second, func(v int64) bool { return v == 1 }); !ok {
		t.Errorf("ssl.fail_verify_cert_hash = %d, want 1", got)
	}

	good, _ := x509.ParseCertificate(der.Bytes)
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: good.SerialNumber, RevocationTime: time.Now()}}}, pki.ca, pki.caKey)
	if err != nil {
		t.Fatal(err)
	}
	crlFile := filepath.Join(pki.dir, "crl.pem")
	os.WriteFile(crlFile, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}), 0o600)
	p = serve(`, crl: { filename: ` + crlFile + ` }`)
	if tlsGet(p.addr("ingress"), pool, goodC, goodK) == nil {
		t.Error("a revoked certificate was served")
	}
	if err := tlsGet(p.addr("ingress"), pool, badC, badK); err != nil {
		t.Errorf("a certificate the CRL does not revoke was refused: %v", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestUpstreamTLSValidation: a cluster checks its upstream's name only
// when told to: a DNS SAN matcher (exact, which a wildcard SAN covers),
// and auto_sni_san_validation against the SNI sent.
func TestUpstreamTLSValidation(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "upstream", false, "*.up.example")
	addr := tlsUpstream(t, cert, key)
	cluster := func(extra, vc string) string {
		return `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
` + extra + `        common_tls_context: { validation_context: { trusted_ca: { filename: ` + pki.caFile + ` }` + vc + ` } }`
	}
	for _, tc := range []struct {
		name, extra, vc string
		want            int
	}{
		{"SAN matcher covered by the wildcard", "", `, match_typed_subject_alt_names: [ { san_type: DNS, matcher: { exact: a.up.example } } ]`, 200},
		{"SAN matcher for another name", "", `, match_typed_subject_alt_names: [ { san_type: DNS, matcher: { exact: a.other.example } } ]`, 503},
		{"deprecated match_subject_alt_names", "", `, match_subject_alt_names: [ { suffix: .up.example } ]`, 200},
		{"auto_sni_san_validation, matching SNI", "        sni: b.up.example\n        auto_sni_san_validation: true\n", "", 200},
		{"auto_sni_san_validation, other SNI", "        sni: b.other.example\n        auto_sni_san_validation: true\n", "", 503},
		{"no name check: chain only", "        sni: b.other.example\n", "", 200},
	} {
		p := startProxy(t, httpBootstrap(addr, routeCfg{}, cluster(tc.extra, tc.vc)))
		if code, _ := get(t, p.url("ingress")+"/"); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
		stat := "cluster.backend.ssl.handshake"
		if tc.want != 200 {
			stat = "cluster.backend.ssl.fail_verify_san"
		}
		if got := p.stat(stat); got == 0 {
			t.Errorf("%s: %s = 0", tc.name, stat)
		}
	}
}

// TestTLSParams: cipher_suites and the maximum version are what a client
// negotiates; require_sni refuses a client that sends none.
func TestTLSParams(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	p := startProxy(t, tlsBootstrap(testutil.StartUpstream(t).Addr, `          require_sni: true
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]
            tls_params: { tls_maximum_protocol_version: TLSv1_2, cipher_suites: ["[ECDHE-ECDSA-AES256-GCM-SHA384|ECDHE-RSA-AES256-GCM-SHA384]"], ecdh_curves: [P-384] }`))
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	c, err := tls.Dial("tcp", p.addr("ingress"), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cs := c.ConnectionState()
	c.Close()
	if cs.Version != tls.VersionTLS12 || cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 || cs.CurveID != tls.CurveP384 {
		t.Errorf("negotiated %s %s %v", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cs.CurveID)
	}
	if _, err := tls.Dial("tcp", p.addr("ingress"), &tls.Config{RootCAs: pool, ServerName: "localhost",
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Error("a suite left out of cipher_suites was negotiated")
	}
	// An IP address is never sent as SNI.
	if _, err := tls.Dial("tcp", p.addr("ingress"), &tls.Config{InsecureSkipVerify: true}); err == nil {
		t.Error("require_sni: a client without SNI got a handshake")
	}
}

// TestTLSSessionResumption: a listener with session_ticket_keys resumes a
// client's session, also on another listener holding the same keys (a
// fleet sharing its keys); a cluster resumes its own sessions upstream.
func TestTLSSessionResumption(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	keyA := strings.Repeat("a", 80)
	ctx := `          session_ticket_keys: { keys: [ { inline_string: "` + keyA + `" } ] }
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: ` + cert + ` }, private_key: { filename: ` + key + ` } } ]`
	up := testutil.StartUpstream(t)
	p1 := startProxy(t, tlsBootstrap(up.Addr, ctx))
	p2 := startProxy(t, tlsBootstrap(up.Addr, ctx))
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	cache := tls.NewLRUClientSessionCache(4)
	dial := func(addr string) bool {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: cache, MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().DidResume
	}
	if dial(p1.addr("ingress")) {
		t.Fatal("the first handshake resumed")
	}
	if !dial(p1.addr("ingress")) {
		t.Error("no resumption on the same listener")
	}
	if !dial(p2.addr("ingress")) {
		t.Error("no resumption on another listener with the same ticket keys")
	}

	// Upstream: the upstream closes each connection; the second
	// handshake resumes the first's session.
	addr := serveTLS(t, cert, key, nil, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		if r.TLS.DidResume {
			io.WriteString(w, "resumed")
		} else {
			io.WriteString(w, "full")
		}
	})})
	p := startProxy(t, httpBootstrap(addr, routeCfg{}, upstreamTLS("localhost")))
	var got []string
	for range 3 {
		_, body := get(t, p.url("ingress")+"/")
		got = append(got, body)
	}
	if strings.Join(got, " ") != "full resumed resumed" {
		t.Errorf("upstream handshakes: %v, want full then resumed", got)
	}
}

// TestUpstreamALPNAutoConfig: a cluster with auto_config speaks what ALPN
// negotiates with each upstream: h2 with one that offers it (every
// request then multiplexed on one connection), HTTP/1.1 with one that
// does not; without TLS, auto_config is refused.
func TestUpstreamALPNAutoConfig(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "upstream", false, "up.example")
	both := tlsUpstream(t, cert, key)
	h1only := serveTLS(t, cert, key, []string{"http/1.1"}, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })})
	opts := `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        auto_config: {}
`
	for addr, want := range map[string]string{both: "HTTP/2.0", h1only: "HTTP/1.1"} {
		p := startProxy(t, httpBootstrap(addr, routeCfg{}, opts+upstreamTLS("up.example")))
		for range 5 {
			if code, body := get(t, p.url("ingress")+"/"); code != 200 || body != want {
				t.Fatalf("upstream %s: %d %q, want %s", addr, code, body, want)
			}
		}
		if want == "HTTP/2.0" {
			if n := p.stat("cluster.backend.upstream_cx_total"); n != 1 {
				t.Errorf("h2 upstream: %d connections, want 1", n)
			}
		}
	}
	if _, err := buildServer(httpBootstrap(both, routeCfg{}, strings.TrimSuffix(opts, "\n"))); err == nil || !strings.Contains(err.Error(), "auto_config: chooses the protocol by ALPN: needs a TLS transport_socket") {
		t.Errorf("auto_config without TLS: %v", err)
	}
}

// TestUpstreamTLSPoolProbe: a pooled TLS connection the upstream closed
// (close_notify and FIN after its idle timeout) is found dead before a
// POST, which may not be sent twice, is written to it.
func TestUpstreamTLSPoolProbe(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "upstream", false, "up.example")
	addr := serveTLS(t, cert, key, []string{"http/1.1"}, &http.Server{IdleTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "posted")
	})})
	p := startProxy(t, httpBootstrap(addr, routeCfg{}, upstreamTLS("up.example")))
	for i := range 3 {
		resp, err := http.Post(p.url("ingress")+"/p", "text/plain", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "posted" {
			t.Fatalf("POST %d after the upstream closed its idle connection: %d %q", i, resp.StatusCode, b)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
