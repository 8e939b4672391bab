package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/straitproxy/strait/internal/testutil"
)

// Secrets: static_resources.secrets, SDS over ADS, rotation by file and
// by push (issue 12).

// serial handshakes with addr (SNI localhost) and returns the serial of
// the certificate it got.
func serial(addr string, pool *x509.CertPool) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func certSerial(t *testing.T, file string) string {
	kp, err := tls.LoadX509KeyPair(file, strings.Replace(file, ".pem", "-key.pem", 1))
	if err != nil {
		t.Fatal(err)
	}
	return kp.Leaf.SerialNumber.String()
}

// handshakeLoad makes requests, each on a new TLS connection, from 4
// clients until stop; it counts failures.
func handshakeLoad(addr string, pool *x509.CertPool, stop <-chan struct{}) (ok, failed *atomic.Int64, wait func()) {
	ok, failed = new(atomic.Int64), new(atomic.Int64)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, DisableKeepAlives: true}
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("https://" + addr + "/load")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
			}
		}()
	}
	return ok, failed, wg.Wait
}

// wrkLoad runs wrk over kept-alive TLS connections for d and returns its
// report; it fails the test on any error or non-2xx answer.
func wrkLoad(t *testing.T, addr string, d time.Duration) func() {
	done := make(chan string, 1)
	go func() {
		out, err := exec.Command(tool(t, "wrk"), "-t1", "-c4", "-d"+fmt.Sprint(int(d.Seconds()))+"s", "https://"+addr+"/wrk").CombinedOutput()
		if err != nil {
			out = append(out, []byte(err.Error())...)
		}
		done <- string(out)
	}()
	return func() {
		out := <-done
		if strings.Contains(out, "Socket errors") || strings.Contains(out, "Non-2xx") || !strings.Contains(out, "requests in") {
			t.Errorf("wrk saw failures:\n%s", out)
		}
	}
}

// replace writes src's bytes to dst by a rename, as a secret rotator does.
func replace(t *testing.T, src, dst string) {
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// TestStaticSecretFileRotation: a listener takes its certificate from a
// static secret naming files; replacing the files serves the new
// certificate on the next handshakes with no failed request (wrk on kept
// connections, new handshakes alongside), kept connections go on, and a
// broken file leaves the current certificate serving.
func TestStaticSecretFileRotation(t *testing.T) {
	pki := newPKI(t)
	c1, k1 := pki.issue(t, "one", false, "localhost")
	c2, k2 := pki.issue(t, "two", false, "localhost")
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	replace(t, c1, cert)
	replace(t, k1, key)
	y := tlsBootstrap(testutil.StartUpstream(t).Addr, `          common_tls_context:
            tls_certificate_sds_secret_configs: [ { name: server } ]`) + `  secrets:
  - name: server
    tls_certificate:
      certificate_chain: { filename: ` + cert + ` }
      private_key: { filename: ` + key + ` }
      watched_directory: { path: ` + dir + ` }
`
	p := startProxy(t, y)
	addr := p.addr("ingress")
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	if s, err := serial(addr, pool); err != nil || s != certSerial(t, c1) {
		t.Fatalf("first certificate: %s %v", s, err)
	}
	kept := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}, Timeout: 5 * time.Second}
	if resp, err := kept.Get("https://" + addr + "/kept"); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body) // to be kept, a connection's answer is read whole
		resp.Body.Close()
	}

	stop := make(chan struct{})
	ok, failed, wait := handshakeLoad(addr, pool, stop)
	wrkDone := wrkLoad(t, addr, 3*time.Second)
	time.Sleep(500 * time.Millisecond)
	replace(t, k2, key) // the key first: a moment of mismatch must not matter
	replace(t, c2, cert)
	testutil.Eventually(t, 5*time.Second, "the rotated certificate", func() bool {
		s, _ := serial(addr, pool)
		return s == certSerial(t, c2)
	})
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wait()
	wrkDone()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("during the rotation: %d requests failed, %d passed", failed.Load(), ok.Load())
	}
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://"+addr+"/kept", nil)
	resp, err := kept.Do(req)
	if err != nil {
		t.Fatalf("a kept connection after the rotation: %v", err)
	}
	if !reused {
		t.Error("the kept connection is gone")
	}
	resp.Body.Close()
	if resp.TLS.PeerCertificates[0].SerialNumber.String() != certSerial(t, c1) {
		t.Error("the kept connection was not the one from before the rotation")
	}

	os.WriteFile(cert, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"), 0o600)
	time.Sleep(2500 * time.Millisecond)
	if s, err := serial(addr, pool); err != nil || s != certSerial(t, c2) {
		t.Fatalf("after a broken file: %s %v, want the last good certificate", s, err)
	}
}

// TestStaticSecretErrors: a secret that is not there, or does not load,
// refuses the config with its path.
func TestStaticSecretErrors(t *testing.T) {
	pki := newPKI(t)
	c1, k1 := pki.issue(t, "one", false, "localhost")
	_, k2 := pki.issue(t, "two", false, "localhost")
	y := tlsBootstrap("127.0.0.1:1", `          common_tls_context:
            tls_certificate_sds_secret_configs: [ { name: server } ]`)
	cases := map[string]string{
		`tls_certificate_sds_secret_configs[0]: unknown static secret "server"`: y,
		"static_resources.secrets[0].tls_certificate: tls: private key does not match public key": y + `  secrets:
  - name: server
    tls_certificate: { certificate_chain: { filename: ` + c1 + ` }, private_key: { filename: ` + k2 + ` } }
`,
		"static_resources.secrets[0].tls_certificate.password: not supported yet": y + `  secrets:
  - name: server
    tls_certificate: { certificate_chain: { filename: ` + c1 + ` }, private_key: { filename: ` + k1 + ` }, password: { inline_string: x } }
`,
	}
	for want, y := range cases {
		if _, err := buildServer(y); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err %v, want %q", err, want)
		}
	}
}

func tlsSecret(t *testing.T, name, certFile, keyFile string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: dsBytes(must(os.ReadFile(certFile))), PrivateKey: dsBytes(must(os.ReadFile(keyFile)))}}}
}

// TestSDSRotation: a listener from LDS whose certificate and client CA
// come by SDS over ADS warms until they arrive; a push rotates the
// certificate under load (wrk, and new mTLS handshakes) with no failed
// request; a secret that does not
// load is NACKed and the previous one keeps serving; the CA from SDS
// checks client certificates against the default validation context's
// SAN matcher (combined_validation_context, as Istio sends it).
func TestSDSRotation(t *testing.T) {
	pki := newPKI(t)
	c1, k1 := pki.issue(t, "one", false, "localhost")
	c2, k2 := pki.issue(t, "two", false, "localhost")
	_, other := pki.issue(t, "other", false, "localhost")
	client, clientKey := pki.issueWith(t, "client", true, uriSAN("spiffe://td/ns/a/sa/client"))
	ca := &tlsv3.Secret{Name: "ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: dsBytes(must(os.ReadFile(pki.caFile)))}}}
	cp := startControlPlane(t, "")
	laddr := "127.0.0.1:" + freePort(t)
	l := fromJSON(t, &listenerv3.Listener{}, mustJSON(t, `
name: ingress
address: { socket_address: { address: 127.0.0.1, port_value: `+strings.Split(laddr, ":")[1]+` } }
filter_chains:
- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      common_tls_context:
        tls_certificate_sds_secret_configs: [ { name: server, sds_config: { ads: {}, resource_api_version: V3 } } ]
        combined_validation_context:
          default_validation_context: { match_typed_subject_alt_names: [ { san_type: URI, matcher: { prefix: "spiffe://td/" } } ] }
          validation_context_sds_secret_config: { name: ca, sds_config: { ads: {}, resource_api_version: V3 } }
`+dedent(hcmFilter("sds", "from-sds-listener"), 4)))
	cp.set("1", map[resource.Type][]types.Resource{resource.ListenerType: {l}, resource.ClusterType: {testutil.XDSCluster("c1")}, resource.EndpointType: {testutil.XDSEndpoints("c1", "127.0.0.1:1")}})
	p := startProxy(t, xdsBootstrap(cp.addr, false))
	time.Sleep(500 * time.Millisecond)
	if c, err := net.Dial("tcp", laddr); err == nil {
		c.Close()
		t.Fatal("a listener waiting for its secrets accepted a connection")
	}
	cp.set("2", map[resource.Type][]types.Resource{resource.ListenerType: {l}, resource.ClusterType: {testutil.XDSCluster("c1")}, resource.EndpointType: {testutil.XDSEndpoints("c1", "127.0.0.1:1")},
		resource.SecretType: {tlsSecret(t, "server", c1, k1), ca}})
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	kp, err := tls.LoadX509KeyPair(client, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	mtls := &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{kp}}
	mserial := func() (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", laddr, mtls)
		if err != nil {
			return "", err
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			return "", err
		}
		b := make([]byte, 512)
		n, _ := c.Read(b)
		if !strings.Contains(string(b[:n]), "from-sds-listener") {
			return "", fmt.Errorf("answer %q", b[:n])
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	testutil.Eventually(t, 5*time.Second, "the listener to open with its secrets", func() bool {
		s, _ := mserial()
		return s == certSerial(t, c1)
	})
	// The client CA came by SDS: a certificate it did not sign is
	// refused, even with a SAN the default context's matcher accepts.
	strangers := newPKI(t)
	sc, sk := strangers.issueWith(t, "stranger", true, uriSAN("spiffe://td/ns/a/sa/client"))
	if tlsGet(laddr, pool, sc, sk) == nil {
		t.Error("a client certificate from another CA was accepted")
	}

	// Rotate under load: wrk on kept connections (no client
	// certificate: none is required), and new mTLS handshakes.
	wrkDone := wrkLoad(t, laddr, 3*time.Second)
	stop := make(chan struct{})
	var okN, failN atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := mserial(); err != nil {
					failN.Add(1)
				} else {
					okN.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cp.set("3", map[resource.Type][]types.Resource{resource.ListenerType: {l}, resource.ClusterType: {testutil.XDSCluster("c1")}, resource.EndpointType: {testutil.XDSEndpoints("c1", "127.0.0.1:1")},
		resource.SecretType: {tlsSecret(t, "server", c2, k2), ca}})
	testutil.Eventually(t, 5*time.Second, "the pushed certificate", func() bool {
		s, _ := mserial()
		return s == certSerial(t, c2)
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	wrkDone()
	if failN.Load() != 0 || okN.Load() == 0 {
		t.Errorf("during the push: %d handshakes failed, %d passed", failN.Load(), okN.Load())
	}

	nacks := cp.nackCount()
	cp.set("4", map[resource.Type][]types.Resource{resource.ListenerType: {l}, resource.ClusterType: {testutil.XDSCluster("c1")}, resource.EndpointType: {testutil.XDSEndpoints("c1", "127.0.0.1:1")},
		resource.SecretType: {tlsSecret(t, "server", c2, other), ca}})
	testutil.Eventually(t, 5*time.Second, "a NACK for a key that does not match", func() bool { return cp.nackCount() > nacks })
	if s, err := mserial(); err != nil || s != certSerial(t, c2) {
		t.Fatalf("after the refused secret: %s %v, want the last good one", s, err)
	}
	_ = p
}

func dsBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// dedent removes n leading spaces from each line.
func dedent(s string, n int) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if len(l) >= n && strings.TrimSpace(l[:n]) == "" {
			lines[i] = l[n:]
		}
	}
	return strings.Join(lines, "\n")
}

// TestUpstreamTLSSecrets: a cluster takes its client certificate and its
// validation context from static secrets (mTLS to the upstream).
func TestUpstreamTLSSecrets(t *testing.T) {
	pki := newPKI(t)
	addr, cc, ck := mtlsUpstream(t, pki)
	y := httpBootstrap(addr, routeCfg{}, `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: up.example
        common_tls_context:
          tls_certificate_sds_secret_configs: [ { name: client } ]
          combined_validation_context:
            default_validation_context: { match_typed_subject_alt_names: [ { san_type: DNS, matcher: { exact: up.example } } ] }
            validation_context_sds_secret_config: { name: ca }`) + `  secrets:
  - { name: client, tls_certificate: { certificate_chain: { filename: ` + cc + ` }, private_key: { filename: ` + ck + ` } } }
  - { name: ca, validation_context: { trusted_ca: { filename: ` + pki.caFile + ` } } }
`
	p := startProxy(t, y)
	if code, body := get(t, p.url("ingress")+"/"); code != 200 || body != "hello proxy" {
		t.Fatalf("%d %q", code, body)
	}
}

// TestSDSClusterWarming: a cluster from CDS whose client certificate
// comes by SDS warms until it arrives (as Envoy's clusters do), and the
// listeners, asked for once the clusters are warm, wait with it; then
// requests reach the upstream, which requires that certificate.
func TestSDSClusterWarming(t *testing.T) {
	pki := newPKI(t)
	upAddr, cc, ck := mtlsUpstream(t, pki)

	cp := startControlPlane(t, "")
	laddr := "127.0.0.1:" + freePort(t)
	cl := testutil.XDSCluster("sec")
	cl.TransportSocket = fromJSON(t, &corev3.TransportSocket{}, `{"name":"envoy.transport_sockets.tls","typed_config":{
	  "@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext","sni":"up.example",
	  "common_tls_context":{"tls_certificate_sds_secret_configs":[{"name":"client","sds_config":{"ads":{},"resource_api_version":"V3"}}]}}}`)
	res := map[resource.Type][]types.Resource{
		resource.ListenerType: {testutil.XDSListener("ingress", laddr, "r", "")},
		resource.RouteType:    {testutil.XDSRoute("r", "sec", "")},
		resource.ClusterType:  {cl}, resource.EndpointType: {testutil.XDSEndpoints("sec", upAddr)},
	}
	cp.set("1", res)
	startProxy(t, xdsBootstrap(cp.addr, false))
	time.Sleep(700 * time.Millisecond)
	if c, err := net.Dial("tcp", laddr); err == nil {
		c.Close()
		t.Fatal("the listener opened while its cluster waited for its client certificate")
	}
	res[resource.SecretType] = []types.Resource{tlsSecret(t, "client", cc, ck)}
	cp.set("2", res)
	waitBody(t, "http://"+laddr+"/", "hello proxy", 5*time.Second)
}

// TestSDSFetchTimeout: a cluster (EDS, and STRICT_DNS) waits for its SDS
// secret as long as its source's initial_fetch_timeout says (here 300
// ms, not Envoy's default 15 s), holding back the listeners meanwhile,
// then serves without it (its connections fail: 503) until it comes.
// (A source's 0 waits for ever: transport/tls's unit test.)
func TestSDSFetchTimeout(t *testing.T) {
	for _, typ := range []string{"EDS", "STRICT_DNS"} {
		t.Run(typ, func(t *testing.T) { sdsFetchTimeout(t, typ) })
	}
}

func sdsFetchTimeout(t *testing.T, typ string) {
	pki := newPKI(t)
	upAddr, cc, ck := mtlsUpstream(t, pki)
	cp := startControlPlane(t, "")
	cl := testutil.XDSCluster("short")
	if typ == "STRICT_DNS" {
		_, port, _ := net.SplitHostPort(upAddr)
		cl = fromJSON(t, &clusterv3.Cluster{}, `{"name":"short","type":"STRICT_DNS","connect_timeout":"1s","load_assignment":{"cluster_name":"short",
		  "endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"127.0.0.1","port_value":`+port+`}}}}]}]}}`)
	}
	cl.TransportSocket = fromJSON(t, &corev3.TransportSocket{}, `{"name":"envoy.transport_sockets.tls","typed_config":{
	  "@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext","sni":"up.example",
	  "common_tls_context":{"tls_certificate_sds_secret_configs":[{"name":"client","sds_config":{"ads":{},"resource_api_version":"V3","initial_fetch_timeout":"0.3s"}}]}}}`)
	laddr := "127.0.0.1:" + freePort(t)
	res := map[resource.Type][]types.Resource{
		resource.ListenerType: {testutil.XDSListener("l", laddr, "r", "")},
		resource.RouteType:    {testutil.XDSRoute("r", "short", "")},
		resource.ClusterType:  {cl}, resource.EndpointType: {testutil.XDSEndpoints("short", upAddr)},
	}
	cp.set("1", res)
	start := time.Now()
	startProxy(t, xdsBootstrap(cp.addr, false))
	// The listener is asked for once the cluster is warm or given up on:
	// not yet at 100 ms.
	time.Sleep(time.Until(start.Add(100 * time.Millisecond)))
	if c, err := net.Dial("tcp", laddr); err == nil {
		c.Close()
		t.Fatal("the listener opened while its cluster waited for its secret")
	}
	c := &http.Client{Timeout: 2 * time.Second}
	var code int
	testutil.Eventually(t, 5*time.Second, "the listener to open with its cluster's secret given up on", func() bool {
		code, _ = body(c, "http://"+laddr+"/")
		return code != 0
	})
	if code != 503 {
		t.Fatalf("without its client certificate: %d, want 503", code)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("served after %v, before the 300 ms initial_fetch_timeout", d)
	}
	res[resource.SecretType] = []types.Resource{tlsSecret(t, "client", cc, ck)}
	cp.set("2", res)
	waitBody(t, "http://"+laddr+"/", "hello proxy", 5*time.Second)
}

// TestTicketKeyRotation: session ticket keys from a secret whose file is
// rotated: a new first key issues tickets while the old one, kept second,
// still opens the tickets out; once it is dropped, they no longer resume.
func TestTicketKeyRotation(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
	os.WriteFile(a, []byte(strings.Repeat("a", 80)), 0o600)
	os.WriteFile(b, []byte(strings.Repeat("b", 80)), 0o600)
	keys := filepath.Join(dir, "first.key")
	replace(t, a, keys)
	second := filepath.Join(dir, "second.key")
	replace(t, a, second)
	y := tlsBootstrap(testutil.StartUpstream(t).Addr, `          session_ticket_keys_sds_secret_config: { name: tickets }
          common_tls_context:
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]`) + `  secrets:
  - name: tickets
    session_ticket_keys: { keys: [ { filename: ` + keys + ` }, { filename: ` + second + ` } ] }
`
	p := startProxy(t, y)
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	dial := func(cache tls.ClientSessionCache) bool {
		c, err := tls.Dial("tcp", p.addr("ingress"), &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: cache, MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().DidResume
	}
	old, aOnly := tls.NewLRUClientSessionCache(1), tls.NewLRUClientSessionCache(1)
	if dial(old) || !dial(old) {
		t.Fatal("no resumption with the first keys")
	}
	dial(aOnly) // a ticket of key a, kept unused
	// b first, a second: old tickets still open; new ones come from b.
	// (The files are read again every second.)
	replace(t, b, keys)
	time.Sleep(2500 * time.Millisecond)
	fresh := tls.NewLRUClientSessionCache(1)
	if dial(fresh) || !dial(fresh) {
		t.Fatal("no resumption with the new first key")
	}
	if !dial(old) {
		t.Error("a ticket of the key kept second did not resume")
	}
	// a dropped: its tickets no longer open; b's still do.
	replace(t, b, second)
	time.Sleep(2500 * time.Millisecond)
	if dial(aOnly) {
		t.Error("a ticket of a dropped key resumed")
	}
	if !dial(fresh) {
		t.Error("a ticket of the current key did not resume")
	}
}

// mtlsUpstream serves "hello <client CN>" over TLS as up.example,
// requiring a client certificate from pki's CA; it returns its address
// and a client certificate (CN proxy) with its key.
func mtlsUpstream(t *testing.T, pki *testPKI) (addr, certFile, keyFile string) {
	sc, sk := pki.issue(t, "upstream", false, "up.example")
	certFile, keyFile = pki.issue(t, "proxy", true)
	kp, err := tls.LoadX509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{kp}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.TLS.PeerCertificates[0].Subject.CommonName)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), certFile, keyFile
}
