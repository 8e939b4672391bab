package test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// TestXFCC: forward_client_cert_details and
// set_current_client_cert_details over mutual TLS and plaintext: the
// default removes a client's x-forwarded-client-cert; SANITIZE_SET
// replaces it by this hop's element (Hash of the client certificate,
// Cert as URL-encoded PEM, Subject, URI and DNS SANs); APPEND_FORWARD
// appends it; FORWARD_ONLY forwards it over mutual TLS only;
// ALWAYS_FORWARD_ONLY always. A server certificate's URI SANs come first,
// as By.
func TestXFCC(t *testing.T) {
	pki := newPKI(t)
	scert, skey := pki.issue(t, "server", false, "localhost")
	ccert, ckey := pki.issueWith(t, "client", true, func(c *x509.Certificate) {
		c.Subject.Organization = []string{"Acme, Inc."}
		c.DNSNames = []string{"client.example"}
		u, _ := url.Parse("spiffe://cluster.local/ns/default/sa/client")
		c.URIs = []*url.URL{u}
	})
	seen := make(chan string, 1)
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- strings.Join(r.Header.Values("x-forwarded-client-cert"), "|")
	}, false)
	kp, err := tls.LoadX509KeyPair(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	mtls := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost",
		Certificates: []tls.Certificate{kp}}}, Timeout: 5 * time.Second}
	send := func(c *http.Client, u, xfcc string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		if xfcc != "" {
			req.Header.Set("x-forwarded-client-cert", xfcc)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-seen
	}
	tlsCtx := `          require_client_certificate: true
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: ` + scert + ` }, private_key: { filename: ` + skey + ` } } ]
            validation_context: { trusted_ca: { filename: ` + pki.caFile + ` } }`
	withHCM := func(y, opts string) string {
		return strings.Replace(y, "          stat_prefix: ingress\n", "          stat_prefix: ingress\n"+opts, 1)
	}
	const spoof = "By=spiffe://evil;Hash=00"

	p := startProxy(t, tlsBootstrap(up, tlsCtx))
	if got := send(mtls, "https://"+p.addr("ingress")+"/", spoof); got != "" {
		t.Errorf("default (SANITIZE): the upstream got %q", got)
	}

	p = startProxy(t, withHCM(tlsBootstrap(up, tlsCtx), `          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: { subject: true, cert: true, dns: true, uri: true }
`))
	raw, _ := os.ReadFile(ccert)
	sum := sha256.Sum256(kp.Certificate[0])
	want := "Hash=" + hex.EncodeToString(sum[:]) + `;Cert="` + strings.ReplaceAll(url.QueryEscape(string(raw)), "+", "%20") +
		`";Subject="CN=client,O=Acme\, Inc.";URI=spiffe://cluster.local/ns/default/sa/client;DNS=client.example`
	got := send(mtls, "https://"+p.addr("ingress")+"/", spoof)
	if got != want {
		t.Errorf("SANITIZE_SET:\n got %q\nwant %q", got, want)
	}
	i, j := strings.Index(got, `Cert="`), strings.Index(got, `";Subject`)
	if pemText, err := url.QueryUnescape(got[i+6 : j]); err != nil || pemText != string(raw) {
		t.Errorf("Cert does not decode to the client's certificate: %v", err)
	}

	p = startProxy(t, withHCM(tlsBootstrap(up, tlsCtx), "          forward_client_cert_details: APPEND_FORWARD\n"))
	if got := send(mtls, "https://"+p.addr("ingress")+"/", spoof); got != spoof+",Hash="+hex.EncodeToString(sum[:]) {
		t.Errorf("APPEND_FORWARD: %q", got)
	}
	// Two lines from the client: both hops are kept.
	req, _ := http.NewRequest("GET", "https://"+p.addr("ingress")+"/", nil)
	req.Header.Add("X-Forwarded-Client-Cert", "Hash=aa")
	req.Header.Add("X-Forwarded-Client-Cert", "Hash=bb")
	if resp, err := mtls.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if got := <-seen; got != "Hash=aa,Hash=bb,Hash="+hex.EncodeToString(sum[:]) {
		t.Errorf("APPEND_FORWARD over two header lines: %q", got)
	}

	// A server certificate with URI SANs: each is a By, first.
	bcert, bkey := pki.issueWith(t, "gateway", false, func(c *x509.Certificate) {
		c.DNSNames = []string{"localhost"}
		u1, _ := url.Parse("spiffe://cluster.local/ns/istio-system/sa/gateway")
		u2, _ := url.Parse("spiffe://cluster.local/ns/istio-system/sa/other")
		c.URIs = []*url.URL{u1, u2}
	})
	// Two certificates: the client's SNI (localhost) picks the second.
	ocert, okey := pki.issue(t, "other", false, "other.example")
	byCtx := strings.Replace(tlsCtx, "tls_certificates: [ { certificate_chain: { filename: "+scert+" }, private_key: { filename: "+skey+" } } ]",
		"tls_certificates: [ { certificate_chain: { filename: "+ocert+" }, private_key: { filename: "+okey+" } }, "+
			"{ certificate_chain: { filename: "+bcert+" }, private_key: { filename: "+bkey+" } } ]", 1)
	if !strings.Contains(byCtx, ocert) {
		t.Fatal("the two-certificate context was not made")
	}
	p = startProxy(t, withHCM(tlsBootstrap(up, byCtx), `          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: { uri: true }
`))
	wantBy := "By=spiffe://cluster.local/ns/istio-system/sa/gateway;By=spiffe://cluster.local/ns/istio-system/sa/other;Hash=" +
		hex.EncodeToString(sum[:]) + ";URI=spiffe://cluster.local/ns/default/sa/client"
	if got := send(mtls, "https://"+p.addr("ingress")+"/", spoof); got != wantBy {
		t.Errorf("By:\n got %q\nwant %q", got, wantBy)
	}

	plain := httpBootstrap(up, routeCfg{}, "")
	for mode, want := range map[string]string{"FORWARD_ONLY": "", "SANITIZE_SET": "", "APPEND_FORWARD": "", "ALWAYS_FORWARD_ONLY": spoof} {
		p = startProxy(t, withHCM(plain, "          forward_client_cert_details: "+mode+"\n"))
		if got := send(http.DefaultClient, p.url("ingress")+"/", spoof); got != want {
			t.Errorf("%s over plaintext: the upstream got %q, want %q", mode, got, want)
		}
	}
	p = startProxy(t, withHCM(tlsBootstrap(up, tlsCtx), "          forward_client_cert_details: FORWARD_ONLY\n"))
	if got := send(mtls, "https://"+p.addr("ingress")+"/", spoof); got != spoof {
		t.Errorf("FORWARD_ONLY over mutual TLS: %q", got)
	}
}
