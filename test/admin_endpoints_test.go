package test

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/transport/tlcp/tlcptest"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestAdminCerts: /certs lists the TLS context of the listener (its
// trusted CA, and its certificate's file, serial, SANs, validity and days
// left) and the cluster's (its trusted CA), round-trips through protojson
// as envoy.admin.v3.Certificates, and shows no key. /hot_restart_version
// says "disabled" without --base-id.
func TestAdminCerts(t *testing.T) {
	pki := newPKI(t)
	notAfter := time.Now().Add(90*24*time.Hour + time.Hour).Truncate(time.Second)
	cert, key := pki.issueWith(t, "server", false, func(c *x509.Certificate) {
		c.SerialNumber = big.NewInt(0xabc123)
		c.DNSNames = []string{"localhost", "api.example"}
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		c.NotAfter = notAfter
	})
	up := testutil.StartUpstream(t)
	b := tlsBootstrap(up.Addr, `          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]
            validation_context: { trusted_ca: { filename: `+pki.caFile+` } }`)
	b = strings.Replace(b, "    load_assignment:", `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context: { validation_context: { trusted_ca: { filename: `+pki.caFile+` } } }
    load_assignment:`, 1)
	p := startProxy(t, b)
	code, body := adminDo(t, "GET", p.admin()+"/certs")
	var certs adminv3.Certificates
	if err := protojson.Unmarshal([]byte(body), &certs); code != 200 || err != nil {
		t.Fatalf("/certs: %d %v\n%s", code, err, body)
	}
	keyPEM, _ := os.ReadFile(key)
	if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, key) || strings.Contains(body, string(keyPEM[30:60])) {
		t.Fatalf("/certs shows the key:\n%s", body)
	}
	if len(certs.Certificates) != 2 {
		t.Fatalf("/certs: %d contexts, want the listener's and the cluster's\n%s", len(certs.Certificates), body)
	}
	ln, cl := certs.Certificates[0], certs.Certificates[1]
	for _, ctx := range []*adminv3.Certificate{ln, cl} {
		if len(ctx.CaCert) != 1 || ctx.CaCert[0].Path != pki.caFile || ctx.CaCert[0].SerialNumber != "01" {
			t.Errorf("ca_cert: %v", ctx.CaCert)
		}
	}
	if len(cl.CertChain) != 0 {
		t.Errorf("the cluster has no certificate of its own: %v", cl.CertChain)
	}
	if len(ln.CertChain) != 1 {
		t.Fatalf("listener cert_chain: %v", ln.CertChain)
	}
	d := ln.CertChain[0]
	var sans []string
	for _, s := range d.SubjectAltNames {
		sans = append(sans, s.GetDns()+s.GetUri()+s.GetIpAddress())
	}
	if d.Path != cert || d.SerialNumber != "abc123" || d.DaysUntilExpiration != 90 ||
		!d.ExpirationTime.AsTime().Equal(notAfter) || d.ValidFrom.AsTime().After(time.Now()) ||
		strings.Join(sans, ",") != "localhost,api.example,127.0.0.1" {
		t.Errorf("listener certificate: %v (sans %v)", d, sans)
	}
	if code, body := adminDo(t, "GET", p.admin()+"/hot_restart_version"); code != 200 || body != "disabled\n" {
		t.Errorf("/hot_restart_version: %d %q", code, body)
	}
}

// TestAdminResetCounters: POST /reset_counters sets the counters back to
// zero and they count on from there; GET is refused.
func TestAdminResetCounters(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	for range 3 {
		if code, _ := get(t, p.url("ingress")+"/"); code != 200 {
			t.Fatalf("request: %d", code)
		}
	}
	const name = "http.ingress.downstream_rq_total"
	testutil.Eventually(t, 5*time.Second, name+" = 3", func() bool { return p.stat(name) == 3 })
	if code, _ := adminDo(t, "GET", p.admin()+"/reset_counters"); code != 405 {
		t.Fatalf("GET /reset_counters: %d, want 405", code)
	}
	if code, body := adminDo(t, "POST", p.admin()+"/reset_counters"); code != 200 || body != "OK\n" {
		t.Fatalf("POST /reset_counters: %d %q", code, body)
	}
	if v := p.stat(name); v != 0 {
		t.Fatalf("%s = %d after /reset_counters", name, v)
	}
	get(t, p.url("ingress")+"/")
	testutil.Eventually(t, 5*time.Second, name+" = 1 after one more request", func() bool { return p.stat(name) == 1 })
}

// TestAdminCertsTLCP: /certs describes a TLCP context too (SM2
// certificates, parsed by smx509): its CA, then its signing and
// encryption certificates.
func TestAdminCertsTLCP(t *testing.T) {
	tp := newTLCPPKI(t)
	up := testutil.StartUpstream(t)
	p := startProxy(t, `
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - `+strings.TrimLeft(tlcpSocket(6, tp.signCert, tp.signKey, tp.encCert, tp.encKey, "trusted_ca: { filename: "+tp.caFile+" }"), " ")+
		hcmFilter("tlcp", "")+`  clusters:
`+staticCluster("backend", up.Addr))
	before := time.Now()
	code, body := adminDo(t, "GET", p.admin()+"/certs")
	var certs adminv3.Certificates
	if err := protojson.Unmarshal([]byte(body), &certs); code != 200 || err != nil || len(certs.Certificates) != 1 {
		t.Fatalf("/certs: %d %v\n%s", code, err, body)
	}
	c := certs.Certificates[0]
	if len(c.CaCert) != 1 || c.CaCert[0].Path != tp.caFile || c.CaCert[0].SerialNumber != fmt.Sprintf("%x", tp.ca.Cert.SerialNumber.Bytes()) {
		t.Errorf("ca_cert: %v", c.CaCert)
	}
	if len(c.CertChain) != 2 {
		t.Fatalf("cert_chain: %v", c.CertChain)
	}
	for i, want := range []struct {
		path string
		leaf *tlcptest.Issued
	}{{tp.signCert, tp.sign}, {tp.encCert, tp.enc}} {
		d := c.CertChain[i]
		if d.Path != want.path || d.SerialNumber != fmt.Sprintf("%x", want.leaf.Cert.Leaf.SerialNumber.Bytes()) ||
			len(d.SubjectAltNames) != 1 || d.SubjectAltNames[0].GetDns() != "tlcp.test" ||
			!d.ExpirationTime.AsTime().Equal(want.leaf.Cert.Leaf.NotAfter) ||
			d.DaysUntilExpiration != daysLeft(want.leaf.Cert.Leaf.NotAfter, before) && d.DaysUntilExpiration != daysLeft(want.leaf.Cert.Leaf.NotAfter, time.Now()) {
			t.Errorf("cert_chain[%d]: %v", i, d)
		}
	}
}

// TestAdminAccessLog: admin.access_log takes any access logger with its
// filters (here JSON lines of the 404s only), beside the deprecated
// admin.access_log_path (every request, Envoy's default format); both
// follow a rotation by mv and /reopen_logs; a bad one refuses the config
// naming the field.
func TestAdminAccessLog(t *testing.T) {
	dir := t.TempDir()
	jsonPath, textPath := filepath.Join(dir, "admin.json"), filepath.Join(dir, "admin.log")
	up := testutil.StartUpstream(t)
	logs := `  access_log_path: ` + textPath + `
  access_log:
  - name: envoy.access_loggers.file
    filter: { status_code_filter: { comparison: { op: EQ, value: { default_value: 404, runtime_key: k } } } }
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
      path: ` + jsonPath + `
      log_format: { json_format: { method: "%REQ(:METHOD)%", path: "%REQ(:PATH)%", code: "%RESPONSE_CODE%", ua: "%REQ(USER-AGENT)%", type: "%RESP(CONTENT-TYPE)%", peer: "%DOWNSTREAM_REMOTE_ADDRESS%" } }
`
	y := strings.Replace(httpBootstrap(up.Addr, routeCfg{}, ""), "admin:\n", "admin:\n"+logs, 1)
	p := startProxy(t, y)
	get(t, p.admin()+"/ready")
	get(t, p.admin()+"/no-such-page")
	p.srv.FlushLogs()
	if err := os.Rename(jsonPath, jsonPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(textPath, textPath+".1"); err != nil {
		t.Fatal(err)
	}
	if code, _ := adminDo(t, "POST", p.admin()+"/reopen_logs"); code != 200 {
		t.Fatalf("/reopen_logs: %d", code)
	}
	get(t, p.admin()+"/also-missing")
	p.srv.FlushLogs()
	read := func(f string) []string {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	var entry map[string]any
	if l := read(jsonPath + ".1"); len(l) != 1 || json.Unmarshal([]byte(l[0]), &entry) != nil ||
		entry["method"] != "GET" || entry["path"] != "/no-such-page" || entry["code"] != float64(404) ||
		!strings.HasPrefix(entry["ua"].(string), "Go-http-client") || !strings.HasPrefix(entry["type"].(string), "text/plain") ||
		!strings.HasPrefix(entry["peer"].(string), "127.0.0.1:") {
		t.Errorf("admin.access_log before the rotation: %q", l)
	}
	if l := read(jsonPath); len(l) != 1 || !strings.Contains(l[0], `"/also-missing"`) {
		t.Errorf("admin.access_log after the rotation: %q", l)
	}
	if l := read(textPath + ".1"); len(l) != 2 || !strings.Contains(l[0], `"GET /ready HTTP/1.1" 200`) ||
		!strings.Contains(l[1], `"GET /no-such-page HTTP/1.1" 404`) {
		t.Errorf("admin.access_log_path before the rotation: %q", l)
	}
	// (/reopen_logs is logged once it answered: after the reopen.)
	if l := read(textPath); len(l) != 2 || !strings.Contains(l[0], `"POST /reopen_logs HTTP/1.1" 200`) ||
		!strings.Contains(l[1], `"GET /also-missing HTTP/1.1" 404`) {
		t.Errorf("admin.access_log_path after the rotation: %q", l)
	}
	bad := strings.Replace(y, "path: "+jsonPath, "path: /no/such/dir/admin.json", 1)
	if _, err := buildServer(bad); err == nil || !strings.Contains(err.Error(), "admin.access_log") {
		t.Fatalf("an unwritable admin.access_log: %v", err)
	}
}

// daysLeft is whole days from now to notAfter (0 once past).
func daysLeft(notAfter, now time.Time) uint64 {
	return uint64(max(0, notAfter.Unix()-now.Unix()) / 86400)
}
