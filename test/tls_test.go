package test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// testPKI is a CA and certificates it signed, written as PEM files.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "strait test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{dir: t.TempDir(), ca: ca, caKey: key}
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue makes a certificate for dns names (and 127.0.0.1) and returns its
// chain and key files; client makes it a client certificate.
func (p *testPKI) issue(t *testing.T, name string, client bool, dns ...string) (certFile, keyFile string) {
	return p.issueWith(t, name, client, func(c *x509.Certificate) { c.DNSNames = dns })
}

// issueWith is issue with the template changed by edit (SANs, serial).
func (p *testPKI) issueWith(t *testing.T, name string, client bool, edit func(*x509.Certificate)) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		KeyUsage: x509.KeyUsageDigitalSignature}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", kder)
}

// tlsBootstrap is httpBootstrap with a TLS transport socket on the
// ingress listener (under the suite's I/O model).
func tlsBootstrap(upstream, tlsCtx string) string {
	b := httpBootstrap(upstream, routeCfg{}, "")
	b = strings.Replace(b, "    filter_chains:\n    - filters:", `    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
`+tlsCtx+`
      filters:`, 1)
	return b
}

// TestTLSListener (issue 12, first slice): a listener terminates TLS from
// certificate files: curl (--cacert, --http1.1 and --http2 with ALPN h2)
// and Go's client get answers, h2 reaches the HTTP/2 codec, a client
// that does not trust the CA fails its handshake, TLS 1.1 is refused.
func TestTLSListener(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	up := testutil.StartUpstream(t)
	p := startProxy(t, tlsBootstrap(up.Addr, `          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]`))
	_, port, _ := net.SplitHostPort(p.addr("ingress"))
	url := "https://localhost:" + port + "/tls"
	for _, proto := range []string{"--http1.1", "--http2"} {
		out, err := exec.Command("curl", "-sS", proto, "--cacert", pki.caFile, "--resolve", "localhost:"+port+":127.0.0.1",
			"-w", " %{http_version}", url).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", proto, err, out)
		}
		want := map[string]string{"--http1.1": "ok /tls 1.1", "--http2": "ok /tls 2"}[proto]
		if string(out) != want {
			t.Fatalf("curl %s: %q, want %q", proto, out, want)
		}
	}
	if got := p.stat("http.ingress.downstream_cx_http2_total"); got != 1 {
		t.Fatalf("downstream_cx_http2_total = %d: ALPN h2 did not reach the HTTP/2 codec", got)
	}
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}, Timeout: 5 * time.Second}
	resp, err := c.Get("https://" + p.addr("ingress") + "/go")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok /go" || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("Go client: %q %+v", b, resp.TLS)
	}
	if _, err := tls.Dial("tcp", p.addr("ingress"), &tls.Config{ServerName: "localhost"}); err == nil {
		t.Fatal("a client that does not trust the CA completed a handshake")
	}
	if _, err := tls.Dial("tcp", p.addr("ingress"), &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
}

// TestTLSClientCertificate: require_client_certificate refuses a client
// without a certificate from the trusted CA and serves one with it.
func TestTLSClientCertificate(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	ccert, ckey := pki.issue(t, "client", true)
	up := testutil.StartUpstream(t)
	p := startProxy(t, tlsBootstrap(up.Addr, `          require_client_certificate: true
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]
            validation_context: { trusted_ca: { filename: `+pki.caFile+` } }`))
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	get := func(certs []tls.Certificate) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: certs}}, Timeout: 5 * time.Second}
		resp, err := c.Get("https://" + p.addr("ingress") + "/m")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if get(nil) == nil {
		t.Fatal("a client without a certificate was served")
	}
	kp, err := tls.LoadX509KeyPair(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	if err := get([]tls.Certificate{kp}); err != nil {
		t.Fatalf("a client with a trusted certificate: %v", err)
	}
}

// TestTLSConfigRefused: a field not implemented is refused with its path;
// TLS under the epoll I/O model is refused until it is built.
func TestTLSConfigRefused(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	certs := `            tls_certificates: [ { certificate_chain: { filename: ` + cert + ` }, private_key: { filename: ` + key + ` } } ]`
	cases := map[string]string{
		"common_tls_context.tls_params.signature_algorithms: not supported yet":                    tlsBootstrap("127.0.0.1:1", "          common_tls_context:\n"+certs+"\n            tls_params: { signature_algorithms: [ecdsa_secp256r1_sha256] }"),
		"cipher_suites[0]: unknown or unsupported TLS 1.2 cipher suite \"TLS_AES_128_GCM_SHA256\"": tlsBootstrap("127.0.0.1:1", "          common_tls_context:\n"+certs+"\n            tls_params: { cipher_suites: [TLS_AES_128_GCM_SHA256] }"),
		"session_ticket_keys.keys[0]: 3 bytes, want 80":                                            tlsBootstrap("127.0.0.1:1", "          session_ticket_keys: { keys: [ { inline_string: abc } ] }\n          common_tls_context:\n"+certs),
		"SAN matchers without a trusted CA":                                                        tlsBootstrap("127.0.0.1:1", "          common_tls_context:\n"+certs+"\n            validation_context: { match_typed_subject_alt_names: [ { san_type: DNS, matcher: { exact: a } } ] }"),
		"san_type: OTHER_NAME is not supported":                                                    tlsBootstrap("127.0.0.1:1", "          common_tls_context:\n"+certs+"\n            validation_context: { trusted_ca: { filename: "+pki.caFile+" }, match_typed_subject_alt_names: [ { san_type: OTHER_NAME, matcher: { exact: a } } ] }"),
		"session_timeout: not supported yet":                                                       tlsBootstrap("127.0.0.1:1", "          session_timeout: 10s\n          common_tls_context:\n"+certs),
	}
	for want, y := range cases {
		if _, err := buildServer(y); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err %v, want %q", err, want)
		}
	}
}

// TestRawBufferTransportSocket: an explicit raw_buffer transport socket
// (as control planes send it) is plain TCP, under either I/O model.
func TestRawBufferTransportSocket(t *testing.T) {
	up := testutil.StartUpstream(t)
	for _, ts := range []string{
		"    - transport_socket: { name: envoy.transport_sockets.raw_buffer }\n      filters:",
		"    - transport_socket: { name: envoy.transport_sockets.raw_buffer, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer } }\n      filters:",
	} {
		y := strings.Replace(httpBootstrap(up.Addr, routeCfg{}, ""), "    - filters:", ts, 1)
		p := startProxy(t, y)
		if code, body := get(t, p.url("ingress")+"/raw"); code != 200 || body != "ok /raw" {
			t.Fatalf("%d %q", code, body)
		}
	}
}

// tlsUpstream serves HTTP/1.1 and HTTP/2 over TLS with cert, answering
// the protocol it got.
func tlsUpstream(t *testing.T, certFile, keyFile string) string {
	return serveTLS(t, certFile, keyFile, []string{"h2", "http/1.1"}, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})})
}

// serveTLS runs srv over TLS on a loopback port with the certificate,
// offering protos by ALPN; it returns the address.
func serveTLS(t *testing.T, certFile, keyFile string, protos []string, srv *http.Server) string {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: protos})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// upstreamTLS is a cluster's transport socket: TLS with sni, nothing
// verified.
func upstreamTLS(sni string) string {
	return `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: ` + sni
}

// TestUpstreamTLS: a cluster with an UpstreamTlsContext speaks TLS to its
// hosts, HTTP/1.1 and HTTP/2 (ALPN h2 offered for an HTTP/2 cluster);
// trusted_ca verifies the upstream's chain, and one signed by another CA
// fails the connection (503).
func TestUpstreamTLS(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "upstream", false, "up.example")
	addr := tlsUpstream(t, cert, key)
	tlsOpts := func(ca string) string {
		return `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: up.example
        common_tls_context: { validation_context: { trusted_ca: { filename: ` + ca + ` } } }
`
	}
	h2 := `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
`
	for opts, want := range map[string]string{tlsOpts(pki.caFile): "HTTP/1.1", tlsOpts(pki.caFile) + h2: "HTTP/2.0"} {
		p := startProxy(t, httpBootstrap(addr, routeCfg{}, strings.TrimSuffix(opts, "\n")))
		if code, body := get(t, p.url("ingress")+"/"); code != 200 || body != want {
			t.Fatalf("want %s: %d %q", want, code, body)
		}
	}
	other := newPKI(t)
	p := startProxy(t, httpBootstrap(addr, routeCfg{}, strings.TrimSuffix(tlsOpts(other.caFile), "\n")))
	if code, _ := get(t, p.url("ingress")+"/"); code != 503 {
		t.Fatalf("an upstream signed by an untrusted CA: %d, want 503", code)
	}
}

// TestTLSIdleEpoll: under the epoll I/O model an idle TLS connection
// holds no goroutine: 200 connections that each made a request and stay
// open add far fewer than 200 goroutines (netpoll would add 200 readers),
// and every one still answers afterwards.
func TestTLSIdleEpoll(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	up := testutil.StartUpstream(t)
	y := tlsBootstrap(up.Addr, `          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]`)
	y = strings.Replace(y, "    filter_chains:", "    metadata: { filter_metadata: { strait: { io_model: epoll } } }\n    filter_chains:", 1)
	p := startProxy(t, y)
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	request := func(c *tls.Conn, path string) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "ok "+path {
			return fmt.Errorf("answer %q", b)
		}
		return nil
	}
	before := runtime.NumGoroutine()
	const n = 200
	conns := make([]*tls.Conn, 0, n)
	for i := range n {
		c, err := tls.Dial("tcp", p.addr("ingress"), &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := request(c, fmt.Sprintf("/%d", i)); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond) // handshake goroutines end
	if grown := runtime.NumGoroutine() - before; grown > n/10 {
		t.Errorf("%d idle TLS connections added %d goroutines", n, grown)
	}
	for i, c := range conns {
		if err := request(c, fmt.Sprintf("/again%d", i)); err != nil {
			t.Fatalf("connection %d after idling: %v", i, err)
		}
	}
}

// TestTLSForwardedProto: requests that came over TLS go upstream with
// x-forwarded-proto https (HTTP/1.1 and h2 clients), plaintext ones with
// http.
func TestTLSForwardedProto(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Header.Get("X-Forwarded-Proto")) }, false)
	p := startProxy(t, tlsBootstrap(up, `          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]`))
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, ForceAttemptHTTP2: h2}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + p.addr("ingress") + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "https" || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
			t.Errorf("%s: x-forwarded-proto %q, want https", resp.Proto, b)
		}
	}
	plain := startProxy(t, httpBootstrap(up, routeCfg{}, ""))
	if _, body := get(t, plain.url("ingress")+"/"); body != "http" {
		t.Errorf("plaintext: x-forwarded-proto %q", body)
	}
}

// TestTLSHalfCloseTCPProxy: TLS terminated in front of tcp_proxy; the
// client sends, then ends its side (close_notify and FIN) and still gets
// the upstream's whole answer: the end of the client's stream reaches
// tcp_proxy once (a second OnEOF would close both directions).
func TestTLSHalfCloseTCPProxy(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	// The upstream answers once it has read everything.
	up := testutil.StartTCP(t, func(c net.Conn) {
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		time.Sleep(100 * time.Millisecond)
		fmt.Fprintf(c, "read %d bytes", n)
	})
	y := tcpBootstrap(up)
	y = strings.Replace(y, "    filter_chains:\n    - filters:", `    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]
      filters:`, 1)
	p := startProxy(t, y)
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	for _, notify := range []bool{true, false} {
		c, err := tls.Dial("tcp", p.addr("tcp"), &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "hello")
		if notify {
			c.CloseWrite() // close_notify
		}
		c.NetConn().(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "read 5 bytes" {
			t.Errorf("close_notify %v: got %q", notify, b)
		}
	}
}

// TestTLSUpload: large uploads over TLS through a listener whose buffer
// limit makes reading pause and resume many times; every byte arrives.
func TestTLSUpload(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}, false)
	y := tlsBootstrap(up, `          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]`)
	y = strings.Replace(y, "    filter_chains:", "    per_connection_buffer_limit_bytes: 16384\n    filter_chains:", 1)
	p := startProxy(t, y)
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}, Timeout: 20 * time.Second}
	for range 3 {
		uploadToSinkAt(t, c, "https://"+p.addr("ingress")+"/up", 8<<20)
	}
}

func uploadToSinkAt(t *testing.T, c *http.Client, url string, size int) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, io.LimitReader(zeros{}, int64(size)))
	req.ContentLength = int64(size)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != fmt.Sprint(size) {
		t.Fatalf("upload: upstream counted %q bytes, want %d", b, size)
	}
}

// TestTLSHandshakeTimeout: a filter chain's
// transport_socket_connect_timeout closes a connection whose handshake is
// not done in time (a client that sends nothing, or half a ClientHello).
func TestTLSHandshakeTimeout(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	y := tlsBootstrap(testutil.StartUpstream(t).Addr, `          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]`)
	y = strings.Replace(y, "    - transport_socket:", "    - transport_socket_connect_timeout: 0.3s\n      transport_socket:", 1)
	p := startProxy(t, y)
	for _, first := range []string{"", "\x16\x03\x01\x02\x00\x01"} {
		c, err := net.Dial("tcp", p.addr("ingress"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, first)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		c.Close()
		if d := time.Since(start); err != nil || d < 200*time.Millisecond || d > 3*time.Second {
			t.Errorf("first bytes %q: closed after %v (%v), want about 0.3 s", first, d, err)
		}
	}
}

// TestTLSCertificateChoice: one context with several certificates
// (ECDSA and RSA) serves the one the client's SNI names, the first when
// it names none of them, and one the client can verify: a client that
// takes only RSA suites gets the RSA certificate.
func TestTLSCertificateChoice(t *testing.T) {
	pki := newPKI(t)
	ac, ak := pki.issue(t, "ecdsa-a", false, "a.example")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "rsa-b"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"b.example"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pki.ca, &rsaKey.PublicKey, pki.caKey)
	if err != nil {
		t.Fatal(err)
	}
	bc := pki.write(t, "rsa-b.pem", "CERTIFICATE", der)
	bk := pki.write(t, "rsa-b-key.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))
	p := startProxy(t, tlsBootstrap(testutil.StartUpstream(t).Addr, `          common_tls_context:
            tls_certificates:
            - { certificate_chain: { filename: `+ac+` }, private_key: { filename: `+ak+` } }
            - { certificate_chain: { filename: `+bc+` }, private_key: { filename: `+bk+` } }`))
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	for sni, want := range map[string]string{"a.example": "ecdsa-a", "b.example": "rsa-b"} {
		if got, err := peerName(p.addr("ingress"), sni, pool); err != nil || got != want {
			t.Errorf("SNI %s: %q (%v), want %q", sni, got, err, want)
		}
	}
	if got, _ := peerName(p.addr("ingress"), "c.example", nil); got != "ecdsa-a" {
		t.Errorf("SNI naming none: %q, want the first certificate", got)
	}
	c, err := tls.Dial("tcp", p.addr("ingress"), &tls.Config{InsecureSkipVerify: true, ServerName: "a.example", MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "rsa-b" {
		t.Errorf("an RSA-only client got %q, want the RSA certificate", got)
	}
}
