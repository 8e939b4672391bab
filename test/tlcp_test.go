package test

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/transport/tlcp"
	"github.com/straitproxy/strait/transport/tlcp/tlcptest"
)

// TLCP end to end (issue 12, item 8): Strait's TLCP transport socket on
// a listener beside TLS and plaintext, and on a cluster; interop with
// tjfoc/gmsm's gmtls (test/tlcpinterop, built into .tools/bin as
// tlcp-peer) both ways.

// tlcpPKI is an SM2 CA with server and client certificate pairs, in
// files.
type tlcpPKI struct {
	ca                                     *tlcptest.CA
	caFile                                 string
	sign, enc, clientSign, clientEnc       *tlcptest.Issued
	signCert, signKey, encCert, encKey     string
	cSignCert, cSignKey, cEncCert, cEncKey string
}

func newTLCPPKI(t *testing.T) *tlcpPKI {
	dir := t.TempDir()
	ca := tlcptest.NewCA("Strait TLCP test CA")
	p := &tlcpPKI{ca: ca, sign: ca.Issue("tlcp sign", false, "tlcp.test"), enc: ca.Issue("tlcp enc", true, "tlcp.test"),
		clientSign: ca.Issue("client sign", false, "spiffe://strait.test/client"), clientEnc: ca.Issue("client enc", true, "spiffe://strait.test/client")}
	write := func(name string, b []byte) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	p.caFile = write("ca.pem", ca.PEM)
	p.signCert, p.signKey = write("sign.pem", p.sign.CertPEM), write("sign-key.pem", p.sign.KeyPEM)
	p.encCert, p.encKey = write("enc.pem", p.enc.CertPEM), write("enc-key.pem", p.enc.KeyPEM)
	p.cSignCert, p.cSignKey = write("csign.pem", p.clientSign.CertPEM), write("csign-key.pem", p.clientSign.KeyPEM)
	p.cEncCert, p.cEncKey = write("cenc.pem", p.clientEnc.CertPEM), write("cenc-key.pem", p.clientEnc.KeyPEM)
	return p
}

// tlcpSocket is the TLCP transport socket's config, indented for a
// filter chain (indent 6) or a cluster (indent 4); extra lines go in its
// value.
func tlcpSocket(indent int, sign, signKey, enc, encKey string, extra ...string) string {
	pad := strings.Repeat(" ", indent)
	s := pad + "transport_socket:\n" +
		pad + "  name: strait.transport_sockets.tlcp\n" +
		pad + "  typed_config:\n" +
		pad + "    \"@type\": type.googleapis.com/xds.type.v3.TypedStruct\n" +
		pad + "    type_url: type.googleapis.com/strait.extensions.transport_sockets.tlcp.v1.Tlcp\n" +
		pad + "    value:\n"
	if sign != "" {
		s += pad + "      sign_certificate: { certificate_chain: { filename: " + sign + " }, private_key: { filename: " + signKey + " } }\n"
	}
	if enc != "" {
		s += pad + "      encryption_certificate: { certificate_chain: { filename: " + enc + " }, private_key: { filename: " + encKey + " } }\n"
	}
	for _, e := range extra {
		s += pad + "      " + e + "\n"
	}
	return s
}

// tlcpGet sends GET path over a TLCP client connection to addr and
// returns the status and body.
func tlcpGet(addr, path string, cfg *tlcp.Config) (int, string, *tlcp.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, "", nil, err
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := tlcp.Client(nc, cfg)
	defer c.Close()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: tlcp.test\r\n\r\n", path); err != nil {
		return 0, "", c, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", c, err
	}
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), c, err
}

// TestTLCPOnePort: one listener serves TLCP, TLS and plaintext, each
// with its own chain (tls_inspector tells TLCP by its ClientHello
// version). tjfoc's client and Strait's own (every suite, with and
// without client certificates) get proxied answers; the server sees
// the client's identity; ssl.* counts the handshakes.
func TestTLCPOnePort(t *testing.T) {
	peer := tool(t, "tlcp-peer")
	tp := newTLCPPKI(t)
	pki := newPKI(t)
	tc, tk := pki.issue(t, "tls", false, "localhost")
	up := testutil.StartUpstream(t)
	y := `
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
` + tlsInspector + `    filter_chains:
    - filter_chain_match: { transport_protocol: tlcp }
` + tlcpSocket(6, tp.signCert, tp.signKey, tp.encCert, tp.encKey, "trusted_ca: { filename: "+tp.caFile+" }") + hcmFilter("tlcp", "") + `    - filter_chain_match: { transport_protocol: tls }
` + tlsSocket(tc, tk) + hcmFilter("tls", "") + `    - filter_chain_match: { transport_protocol: raw_buffer }
` + hcmFilter("plain", "") + `  clusters:
` + staticCluster("backend", up.Addr)
	p := startProxy(t, y)
	addr := p.addr("ingress")

	out, err := exec.Command(peer, "client", "-connect", addr, "-ca", tp.caFile, "-name", "tlcp.test", "-path", "/tjfoc").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "200 ok /tjfoc" {
		t.Fatalf("tjfoc client: %q (%v)", out, err)
	}
	// tjfoc with a client certificate (one signing certificate).
	out, err = exec.Command(peer, "client", "-connect", addr, "-ca", tp.caFile, "-name", "tlcp.test", "-path", "/tjfoc-mtls",
		"-cert", tp.cSignCert, "-key", tp.cSignKey).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "200 ok /tjfoc-mtls" {
		t.Fatalf("tjfoc client with a certificate: %q (%v)", out, err)
	}
	for _, id := range tlcp.DefaultSuites {
		cfg := &tlcp.Config{RootCAs: tp.ca.Pool(), ServerName: "tlcp.test", Suites: []uint16{id},
			SignCert: tp.clientSign.Cert, EncCert: tp.clientEnc.Cert}
		code, body, c, err := tlcpGet(addr, "/"+tlcp.SuiteName(id), cfg)
		if err != nil || code != 200 || body != "ok /"+tlcp.SuiteName(id) {
			t.Fatalf("%s: %d %q (%v)", tlcp.SuiteName(id), code, body, err)
		}
		if got := c.ConnectionState().CipherSuite; got != id {
			t.Fatalf("suite %s, want %s", tlcp.SuiteName(got), tlcp.SuiteName(id))
		}
	}
	// Without a client certificate: the ECC suites only.
	code, body, c, err := tlcpGet(addr, "/anon", &tlcp.Config{RootCAs: tp.ca.Pool(), ServerName: "tlcp.test"})
	if err != nil || code != 200 || body != "ok /anon" || c.ConnectionState().CipherSuite != tlcp.ECC_SM4_GCM_SM3 {
		t.Fatalf("anonymous client: %d %q (%v)", code, body, err)
	}
	// TLS and plaintext on the same port.
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	if got, err := peerName(addr, "localhost", pool); err != nil || got != "tls" {
		t.Fatalf("TLS on the TLCP port: %q (%v)", got, err)
	}
	if code, body := get(t, "http://"+addr+"/plain"); code != 200 || body != "ok /plain" {
		t.Fatalf("plaintext on the TLCP port: %d %q", code, body)
	}
	for name, want := range map[string]int64{"http.tlcp.downstream_rq_total": 7, "http.tls.downstream_rq_total": 0,
		"http.plain.downstream_rq_total": 1, "listener.127.0.0.1:0.ssl.versions.TLCP": 7,
		"listener.127.0.0.1:0.ssl.ciphers.ECC_SM4_CBC_SM3": 3, "listener.127.0.0.1:0.ssl.ciphers.ECDHE_SM4_GCM_SM3": 1,
		"listener.127.0.0.1:0.ssl.no_certificate": 3 /* two TLCP clients and the TLS one */} {
		// The server counts a handshake when its side is done, which
		// may be just after the client's.
		testutil.Eventually(t, 2*time.Second, name, func() bool { return p.stat(name) == want })
	}
}

// TestTLCPRequireClientCertificate: with require_client_certificate a
// client without one, or with a stranger's, is refused; the listener
// keeps serving.
func TestTLCPRequireClientCertificate(t *testing.T) {
	tp := newTLCPPKI(t)
	up := testutil.StartUpstream(t)
	y := `
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - ` + strings.TrimLeft(tlcpSocket(6, tp.signCert, tp.signKey, tp.encCert, tp.encKey,
		"trusted_ca: { filename: "+tp.caFile+" }", "require_client_certificate: true", `cipher_suites: [ECDHE_SM4_CBC_SM3, ECC_SM4_CBC_SM3]`), " ") +
		hcmFilter("tlcp", "") + `  clusters:
` + staticCluster("backend", up.Addr)
	p := startProxy(t, y)
	addr := p.addr("ingress")
	base := tlcp.Config{RootCAs: tp.ca.Pool(), ServerName: "tlcp.test"}
	anon := base
	if _, _, _, err := tlcpGet(addr, "/", &anon); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	stranger := base
	stranger.SignCert = tlcptest.NewCA("other").Issue("stranger", false).Cert
	if _, _, _, err := tlcpGet(addr, "/", &stranger); err == nil {
		t.Fatal("a stranger's certificate got through")
	}
	ok := base
	ok.SignCert, ok.EncCert = tp.clientSign.Cert, tp.clientEnc.Cert
	code, body, c, err := tlcpGet(addr, "/mtls", &ok)
	if err != nil || code != 200 || body != "ok /mtls" || c.ConnectionState().CipherSuite != tlcp.ECDHE_SM4_CBC_SM3 {
		t.Fatalf("mTLS client: %d %q (%v)", code, body, err)
	}
	testutil.Eventually(t, 2*time.Second, "ssl.connection_error 2", func() bool { return p.stat("listener.127.0.0.1:0.ssl.connection_error") == 2 })
}

// TestTLCPUpstream: a cluster with the TLCP transport socket talks to
// tjfoc's gmtls server (ECC_SM4_CBC_SM3, with a client certificate) and
// to a server of our own on an ECDHE GCM suite; a server whose
// certificate does not verify fails the request with 503.
func TestTLCPUpstream(t *testing.T) {
	peer := tool(t, "tlcp-peer")
	tp := newTLCPPKI(t)
	cmd := exec.Command(peer, "server", "-sign-cert", tp.signCert, "-sign-key", tp.signKey, "-enc-cert", tp.encCert, "-enc-key", tp.encKey, "-ca", tp.caFile)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("tlcp-peer server: %v %s", err, stderr.String())
	}
	tjfoc := strings.TrimSpace(line)

	// Our own TLCP server, ECDHE with client certificates.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	scfg := &tlcp.Config{SignCert: tp.sign.Cert, EncCert: tp.enc.Cert, Suites: []uint16{tlcp.ECDHE_SM4_GCM_SM3},
		ClientAuth: tlcp.RequireAndVerifyClientCert, ClientCAs: tp.ca.Pool()}
	go http.Serve(tlcpListener{ln, scfg}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "own TLCP server %s", r.URL.Path)
	}))

	cluster := func(name, addr, ca, sni string) string {
		return staticCluster(name, addr) + tlcpSocket(4, tp.cSignCert, tp.cSignKey, tp.cEncCert, tp.cEncKey,
			"trusted_ca: { filename: "+ca+" }", "sni: "+sni)
	}
	other := tlcptest.NewCA("other")
	otherFile := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(otherFile, other.PEM, 0o600)
	route := func(prefix, cluster string) string {
		return `{ match: { prefix: "` + prefix + `" }, route: { cluster: ` + cluster + ` } }`
	}
	y := `
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ ` + route("/tjfoc", "tjfoc") + `, ` + route("/own", "own") + `, ` + route("/bad", "bad") + ` ] } ] }
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
  clusters:
` + cluster("tjfoc", tjfoc, tp.caFile, "tlcp.test") + cluster("own", ln.Addr().String(), tp.caFile, "tlcp.test") +
		cluster("bad", tjfoc, otherFile, "tlcp.test")
	p := startProxy(t, y)
	addr := p.addr("ingress")
	for path, want := range map[string]string{"/tjfoc/a": "tjfoc answers GET /tjfoc/a", "/own/b": "own TLCP server /own/b"} {
		for i := 0; i < 2; i++ {
			if code, body := get(t, "http://"+addr+path); code != 200 || body != want {
				t.Fatalf("%s: %d %q, want %q (tjfoc: %s)", path, code, body, want, stderr.String())
			}
		}
	}
	if code, _ := get(t, "http://"+addr+"/bad"); code != 503 {
		t.Fatalf("an upstream that does not verify: %d, want 503", code)
	}
	for name, want := range map[string]int64{"cluster.own.ssl.ciphers.ECDHE_SM4_GCM_SM3": 1, "cluster.tjfoc.ssl.ciphers.ECC_SM4_CBC_SM3": 1} {
		if got := p.stat(name); got < want {
			t.Errorf("%s = %d, want >= %d", name, got, want)
		}
	}
	if got := p.stat("cluster.bad.ssl.connection_error"); got < 1 {
		t.Errorf("cluster.bad.ssl.connection_error = %d", got)
	}
}

// tlcpListener accepts TLCP server connections.
type tlcpListener struct {
	net.Listener
	cfg *tlcp.Config
}

func (l tlcpListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tlcp.Server(c, l.cfg), nil
}

// TestTLCPConfigErrors: a bad TLCP config is refused with the field's
// path.
func TestTLCPConfigErrors(t *testing.T) {
	tp := newTLCPPKI(t)
	for _, c := range []struct {
		extra []string
		enc   bool
		want  string
	}{
		{[]string{"bogus: 1"}, true, "typed_config.bogus: unknown field"},
		{[]string{"cipher_suites: [AES128]"}, true, "cipher_suites[0]"},
		{nil, false, "encryption_certificate: required"},
		{[]string{"require_client_certificate: true"}, true, "require_client_certificate: needs trusted_ca"},
		{[]string{"sni: x"}, true, "sni: an upstream field"},
		{[]string{"trusted_ca: { filename: /nonexistent.pem }"}, true, "trusted_ca"},
		{[]string{"SNI: x"}, true, "typed_config.SNI: unknown field"},
		{[]string{"sign_certificate: { certificate_chain: { filename: /x }, private_key: { filename: /y }, password: z }"}, true, "sign_certificate.password: unknown field"},
		{[]string{"cipher_suites: [ECDHE_SM4_GCM_SM3]"}, true, "cipher_suites: only ECDHE suites"},
	} {
		enc, encKey := "", ""
		if c.enc {
			enc, encKey = tp.encCert, tp.encKey
		}
		y := `
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - ` + strings.TrimLeft(tlcpSocket(6, tp.signCert, tp.signKey, enc, encKey, c.extra...), " ") + hcmFilter("tlcp", "ok")
		_, err := buildServer(y)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "transport_socket.typed_config") {
			t.Errorf("%v: %v, want %q", c.extra, err, c.want)
		}
	}
	// A cluster that offers only ECDHE suites without its certificates.
	y := `
static_resources:
  clusters:
` + staticCluster("up", "127.0.0.1:1") + tlcpSocket(4, "", "", "", "", "cipher_suites: [ECDHE_SM4_CBC_SM3]")
	if _, err := buildServer(y); err == nil || !strings.Contains(err.Error(), "clusters[0].transport_socket.typed_config.cipher_suites: only ECDHE suites") {
		t.Errorf("an ECDHE-only cluster without certificates: %v", err)
	}
}
