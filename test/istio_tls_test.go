package test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// kubeTLSSecret is a Kubernetes TLS Secret of the files' contents (ca: the
// CA file for client certificates, or "").
func kubeTLSSecret(t *testing.T, name, certFile, keyFile, caFile string) string {
	t.Helper()
	b64 := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	s := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: { name: %s, namespace: istio-system }
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
`, name, b64(certFile), b64(keyFile))
	if caFile != "" {
		s += "  ca.crt: " + b64(caFile) + "\n"
	}
	return s
}

// TestIstioGatewayTLS: a Gateway terminating TLS with credentials pilot
// serves over SDS (credentialName: a Kubernetes Secret), SIMPLE and
// MUTUAL, over state-of-the-world ADS and over delta.
func TestIstioGatewayTLS(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) { istioGatewayTLS(t, delta) })
	}
}

func istioGatewayTLS(t *testing.T, delta bool) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "gateway", false, "tls.example.com", "mtls.example.com")
	ccert, ckey := pki.issue(t, "client", true, "client")
	ok := func(int) int { return 200 }
	backend := startCounting(t, "backend", ok)
	_, p1, _ := net.SplitHostPort(closedPort(t))
	_, p2, _ := net.SplitHostPort(closedPort(t))
	cfg := gatewayHead + fmt.Sprintf(`  - port: { number: %s, name: https, protocol: HTTPS }
    bind: 127.0.0.1
    hosts: [tls.example.com]
    tls: { mode: SIMPLE, credentialName: cred }
  - port: { number: %s, name: https-mtls, protocol: HTTPS }
    bind: 127.0.0.1
    hosts: [mtls.example.com]
    tls: { mode: MUTUAL, credentialName: mcred }
`, p1, p2) + serviceEntry("backend", "backend.example.com", 18080, backend.addr) + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: route, namespace: istio-system }
spec:
  hosts: [tls.example.com, mtls.example.com]
  gateways: [istio-system/ingress]
  http:
  - route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
`
	kube := kubeTLSSecret(t, "cred", cert, key, "") + "---\n" + kubeTLSSecret(t, "mcred", cert, key, pki.caFile)
	pilot := startPilotWith(t, cfg, kube, "")
	proc := runStrait(t, istioGateway(pilot.Addr, delta), 0)
	admin := "http://" + proc.admin
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca)
	client := func(name string, certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{ServerName: name, RootCAs: roots, Certificates: certs}}}
	}
	get := func(c *http.Client, port, host string) (int, string) {
		req, _ := http.NewRequest("GET", "https://127.0.0.1:"+port+"/", nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	simple := client("tls.example.com")
	code, got := awaitGateway(func() (int, string) { return get(simple, p1, "tls.example.com") })
	if code != 200 || got != "backend" {
		t.Fatalf("SIMPLE TLS through the gateway: %d %q; rejected %v\n%s\npilot:\n%.3000s", code, got, rejections(t, admin), proc.stderr.String(), pilot.stderr.String())
	}
	cc, err := tls.LoadX509KeyPair(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	code, got = awaitGateway(func() (int, string) { return get(client("mtls.example.com", cc), p2, "mtls.example.com") })
	if code != 200 || got != "backend" {
		t.Fatalf("MUTUAL TLS with a client certificate: %d %q\n%s", code, got, proc.stderr.String())
	}
	if code, got := get(client("mtls.example.com"), p2, "mtls.example.com"); code != 0 || !strings.Contains(got, "certificate") {
		t.Errorf("MUTUAL TLS without a client certificate: %d %q, want a failed handshake", code, got)
	}
	if r := rejections(t, admin); len(r) > 0 {
		t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
	}
}
