package test

import (
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

func TestStrictDNSCluster(t *testing.T) {
	up := testutil.StartUpstream(t)
	_, port, _ := net.SplitHostPort(up.Addr)
	yaml := strings.Replace(httpBootstrap(up.Addr, routeCfg{}, "    type: STRICT_DNS\n    dns_lookup_family: V4_ONLY"),
		"address: 127.0.0.1, port_value: "+port, "address: localhost, port_value: "+port, 1)
	yaml = strings.Replace(yaml, "route: { cluster: backend }", "route: { cluster: backend, auto_host_rewrite: true }", 1)
	p := startProxy(t, yaml)
	code, body := get(t, p.url("ingress")+"/dns")
	if code != 200 || body != "ok /dns" {
		t.Fatalf("got %d %q", code, body)
	}
	// auto_host_rewrite sends the DNS name the host was resolved from.
	if _, body := get(t, p.url("ingress")+"/headers"); !strings.Contains(body, "Host: localhost\r\n") {
		t.Fatalf("upstream saw:\n%s", body)
	}
}

// TestMaxRequestsOverflow: with max_requests 1, a second concurrent request
// is refused with 503 and x-envoy-overloaded, and counted.
func TestMaxRequestsOverflow(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, "    circuit_breakers: { thresholds: [ { max_requests: 1 } ] }"))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		get(t, p.url("ingress")+"/slow/500")
	}()
	testutil.Eventually(t, 5*time.Second, "the first request to be in flight", func() bool { return up.Started.Load() == 1 })
	resp, err := http.Get(p.url("ingress") + "/second")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("x-envoy-overloaded") != "true" || !strings.Contains(string(b), "overflow") {
		t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, b)
	}
	wg.Wait()
	if got := p.stat("cluster.backend.upstream_rq_overflow"); got != 1 {
		t.Fatalf("upstream_rq_overflow = %d", got)
	}
}

func TestTCPProxyIdleTimeout(t *testing.T) {
	yaml := strings.Replace(tcpBootstrap(testutil.StartEcho(t)), "cluster: echo\n", "cluster: echo\n          idle_timeout: 0.2s\n", 1)
	p := startProxy(t, yaml)
	c, err := net.Dial("tcp", p.addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %v, want EOF from the idle timeout", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", d)
	}
	testutil.Eventually(t, time.Second, "idle_timeout counter", func() bool { return p.stat("tcp.echo.idle_timeout") == 1 })
}

func TestConfigDumpRedactsSecrets(t *testing.T) {
	up := testutil.StartUpstream(t)
	pki := newPKI(t)
	certFile, keyFile := pki.issue(t, "server", false, "localhost")
	cert, key := must(os.ReadFile(certFile)), must(os.ReadFile(keyFile))
	quote := func(b []byte) string { return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\\n") }
	yaml := httpBootstrap(up.Addr, routeCfg{}, "") + `
  secrets:
  - name: server_cert
    tls_certificate:
      certificate_chain: { inline_string: "` + quote(cert) + `" }
      private_key: { inline_string: "` + quote(key) + `" }
`
	p := startProxy(t, yaml)
	code, body := get(t, p.admin()+"/config_dump")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	keyBody := strings.Split(string(key), "\n")[1]
	if strings.Contains(body, keyBody) || !strings.Contains(body, "[redacted]") || !strings.Contains(body, "BEGIN CERTIFICATE") {
		t.Fatalf("config dump not redacted as expected:\n%s", body)
	}
}
