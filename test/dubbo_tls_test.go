package test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/protocol/dubbo/dubbotest"
)

// TestDubboTLS: Dubbo over TLS both ways. The listener terminates TLS
// (its DownstreamTlsContext) in front of dubbo_proxy; the cluster speaks
// TLS to a TLS provider (UpstreamTlsContext, the provider's chain checked
// against trusted_ca) and offers no ALPN protocol, since Dubbo is not
// HTTP/2; calls go through intact, and a provider signed by another CA is
// refused (SERVICE_ERROR).
func TestDubboTLS(t *testing.T) {
	pki := newPKI(t)
	pcert, pkey := pki.issue(t, "proxy", false, "proxy.example")
	ucert, ukey := pki.issue(t, "provider", false, "provider.example")
	kp, err := tls.LoadX509KeyPair(ucert, ukey)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var offered [][]string
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			mu.Lock()
			offered = append(offered, hello.SupportedProtos)
			mu.Unlock()
			return nil, nil
		}})
	prov := dubbotest.ServeProvider(ln, dubbotest.Echo)
	t.Cleanup(prov.Close)

	upTLS := func(ca string) string {
		return `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: provider.example
        common_tls_context: { validation_context: { trusted_ca: { filename: ` + ca + ` } } }
`
	}
	downTLS := `    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context: { tls_certificates: [ { certificate_chain: { filename: ` + pcert + ` }, private_key: { filename: ` + pkey + ` } } ] }
      filters:`
	other := newPKI(t)
	p := startProxy(t, `
static_resources:
  listeners:
`+strings.Replace(dubboListener("dubbo", `
            { interface: org.example.Untrusted, routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: untrusted } } ] },
            `+anyMethod, ""), "    - filters:", downTLS, 1)+`  clusters:
`+clusterOf("svc", prov.Addr)+upTLS(pki.caFile)+clusterOf("untrusted", prov.Addr)+upTLS(other.caFile))

	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(pki.caFile)
	pool.AppendCertsFromPEM(ca)
	conn, err := tls.Dial("tcp", p.addr("dubbo"), &tls.Config{RootCAs: pool, ServerName: "proxy.example"})
	if err != nil {
		t.Fatal(err)
	}
	c := dubbotest.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	big := strings.Repeat("tls", 100000)
	for _, arg := range []string{"hello", big} {
		r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "echo", Args: []any{arg}}, 5*time.Second)
		if err != nil || r.Status != 20 || r.Value != arg {
			t.Fatalf("echo of %d bytes over TLS both ways: status %d, %q, %v", len(arg), r.Status, r.Error, err)
		}
	}
	mu.Lock()
	for _, protos := range offered {
		if len(protos) != 0 {
			t.Errorf("the Dubbo upstream connection offered ALPN %v", protos)
		}
	}
	mu.Unlock()
	r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Untrusted", Method: "get", Args: []any{"x"}}, 5*time.Second)
	if err != nil || r.Status != 70 {
		t.Errorf("a provider signed by an untrusted CA: %+v, %v; want SERVICE_ERROR (70)", r, err)
	}
	if n := prov.Calls.Load(); n != 2 {
		t.Errorf("the provider saw %d calls, want 2", n)
	}
}
