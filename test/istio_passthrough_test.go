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

	"github.com/straitproxy/strait/internal/testutil"
)

// TestIstioGatewayPassthrough: a Gateway's TLS server in PASSTHROUGH mode
// routes connections by SNI, untouched, to the ServiceEntry a
// VirtualService's tls route names (pilot's listener: tls_inspector,
// filter chains by server_names, tcp_proxy); an SNI no route names is
// refused; a TCP server forwards bytes by a tcp route. Nothing is
// NACKed.
func TestIstioGatewayPassthrough(t *testing.T) {
	pki := newPKI(t)
	backend := func(name string) string {
		cert, key := pki.issue(t, name, false, name+".example.com")
		return serveTLS(t, cert, key, nil, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello from "+name)
		})})
	}
	a, b, echo := backend("a"), backend("b"), testutil.StartEcho(t)
	_, p1, _ := net.SplitHostPort(closedPort(t))
	_, p2, _ := net.SplitHostPort(closedPort(t))
	cfg := gatewayHead + fmt.Sprintf(`  - port: { number: %s, name: tls, protocol: TLS }
    bind: 127.0.0.1
    hosts: [a.example.com, b.example.com]
    tls: { mode: PASSTHROUGH }
  - port: { number: %s, name: tcp, protocol: TCP }
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: sni, namespace: istio-system }
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [istio-system/ingress]
  tls:
  - match: [ { port: %s, sniHosts: [a.example.com] } ]
    route: [ { destination: { host: a.example.com, port: { number: 8443 } } } ]
  - match: [ { port: %s, sniHosts: [b.example.com] } ]
    route: [ { destination: { host: b.example.com, port: { number: 8443 } } } ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: tcp, namespace: istio-system }
spec:
  hosts: ["*"]
  gateways: [istio-system/ingress]
  tcp:
  - match: [ { port: %s } ]
    route: [ { destination: { host: echo.example.com, port: { number: 9000 } } } ]
`, p1, p2, p1, p1, p2) + serviceEntryOf("TLS", "a", "a.example.com", 8443, a) +
		serviceEntryOf("TLS", "b", "b.example.com", 8443, b) + serviceEntryOf("TCP", "echo", "echo.example.com", 9000, echo)
	pilot := startPilot(t, cfg)
	proc := runStrait(t, istioGateway(pilot.Addr, false), 0)
	admin := "http://" + proc.admin
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca)
	via := func(sni string) (int, string) {
		c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{ServerName: sni, RootCAs: roots}}}
		defer c.CloseIdleConnections()
		code, got := body(c, "https://127.0.0.1:"+p1+"/")
		return code, got
	}
	if code, got := awaitGateway(func() (int, string) { return via("a.example.com") }); code != 200 || got != "hello from a" {
		t.Fatalf("SNI a.example.com: %d %q; rejected %v\n%s", code, got, rejections(t, admin), proc.stderr.String())
	}
	// The backend's own certificate reached the client (verified against
	// its name): the gateway did not terminate TLS.
	if code, got := via("b.example.com"); code != 200 || got != "hello from b" {
		t.Errorf("SNI b.example.com: %d %q", code, got)
	}
	if code, got := via("c.example.com"); code != 0 {
		t.Errorf("an SNI no route names: %d %q, want the connection refused", code, got)
	}
	var c net.Conn
	testutil.Eventually(t, 10*time.Second, "the TCP server", func() bool {
		var err error
		if c, err = net.DialTimeout("tcp", "127.0.0.1:"+p2, time.Second); err != nil {
			return false
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 5)
		if _, err := c.Write([]byte("hello")); err == nil {
			if _, err := io.ReadFull(c, buf); err == nil && string(buf) == "hello" {
				return true
			}
		}
		c.Close()
		return false
	})
	c.Close()
	if r := rejections(t, admin); len(r) > 0 {
		t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
	}
}

// TestIstioGatewayAutoPassthrough: an east-west gateway (ROUTER_MODE
// sni-dnat) with an AUTO_PASSTHROUGH server: pilot sends a filter chain
// per in-mesh service port, matched by the SNI naming its cluster
// (outbound_.PORT_._.HOST) and Istio's ALPN, with tcp_proxy to that
// cluster; a mesh client's TLS reaches the workload untouched; a client
// that does not offer Istio's ALPN, or names another SNI, is refused.
func TestIstioGatewayAutoPassthrough(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "a", false, "a.example.com")
	a := serveTLS(t, cert, key, nil, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from a")
	})})
	_, port, _ := net.SplitHostPort(closedPort(t))
	se := strings.NewReplacer("MESH_EXTERNAL", "MESH_INTERNAL",
		"ports: { tls: ", "labels: { security.istio.io/tlsMode: istio }, ports: { tls: ").Replace(serviceEntryOf("TLS", "a", "a.example.com", 8443, a))
	pilot := startPilot(t, gatewayHead+fmt.Sprintf(`  - port: { number: %s, name: tls, protocol: TLS }
    bind: 127.0.0.1
    hosts: ["*.example.com"]
    tls: { mode: AUTO_PASSTHROUGH }
`, port)+se)
	y := strings.Replace(istioGateway(pilot.Addr, false), "    LABELS: { istio: ingressgateway }\n",
		"    LABELS: { istio: ingressgateway }\n    ROUTER_MODE: sni-dnat\n", 1)
	// Pilot's clusters for the in-mesh service ask sds-grpc for the
	// workload certificate: give the gateway one.
	ccert, ckey := pki.issue(t, "gateway", true)
	proc := runStrait(t, withAgentSDS(t, y, tlsSecret(t, "default", ccert, ckey), rootCASecret(t, pki.caFile)), 0)
	admin := "http://" + proc.admin
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca)
	via := func(sni string, alpn ...string) (int, string) {
		// The workload's own certificate (a.example.com) is checked: the
		// gateway did not terminate TLS.
		c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{ServerName: sni, RootCAs: roots, NextProtos: alpn,
				VerifyConnection: func(cs tls.ConnectionState) error {
					_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: "a.example.com", Roots: roots})
					return err
				}, InsecureSkipVerify: true}}}
		defer c.CloseIdleConnections()
		return body(c, "https://127.0.0.1:"+port+"/")
	}
	const sni = "outbound_.8443_._.a.example.com"
	if code, got := awaitGateway(func() (int, string) { return via(sni, "istio") }); code != 200 || got != "hello from a" {
		t.Fatalf("mesh client through AUTO_PASSTHROUGH: %d %q; rejected %v\n%s", code, got, rejections(t, admin), proc.stderr.String())
	}
	if code, got := via(sni); code != 0 {
		t.Errorf("a client without Istio's ALPN: %d %q, want refused", code, got)
	}
	if code, got := via("outbound_.9999_._.a.example.com", "istio"); code != 0 {
		t.Errorf("an SNI naming no cluster: %d %q, want refused", code, got)
	}
	if r := rejections(t, admin); len(r) > 0 {
		t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
	}
}
