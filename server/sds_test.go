package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/straitproxy/strait/admin"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/xds"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	_ "github.com/straitproxy/strait/protocol/http1"
	_ "github.com/straitproxy/strait/upstream/lb/roundrobin"
)

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "strait-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func secret(name string, tc *tlsv3.TlsCertificate, vc *tlsv3.CertificateValidationContext) *tlsv3.Secret {
	s := &tlsv3.Secret{Name: name}
	if tc != nil {
		s.Type = &tlsv3.Secret_TlsCertificate{TlsCertificate: tc}
	} else {
		s.Type = &tlsv3.Secret_ValidationContext{ValidationContext: vc}
	}
	return s
}

func inline(b []byte) string { return string(b) }

// TestSDSSecrets: secrets asked for by name are validated, stored and
// dumped with their private keys redacted; a malformed one is NACKed and
// the previous version stays.
func TestSDSSecrets(t *testing.T) {
	snapCache := cache.NewSnapshotCache(false, cache.IDHash{}, nil)
	nacks := make(chan string, 16)
	cb := xdsserver.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoverygrpc.DiscoveryRequest) error {
		if m := r.GetErrorDetail().GetMessage(); m != "" {
			nacks <- m
		}
		return nil
	}}
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xdsserver.NewServer(context.Background(), snapCache, cb))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()

	cert, key := selfSigned(t)
	other, otherKey := selfSigned(t)
	_ = other
	set := func(v string, secrets ...types.Resource) {
		snap, err := cache.NewSnapshot(v, map[resource.Type][]types.Resource{resource.SecretType: secrets})
		if err != nil {
			t.Fatal(err)
		}
		if err := snapCache.SetSnapshot(context.Background(), "sds-test", snap); err != nil {
			t.Fatal(err)
		}
	}
	good := secret("cert", &tlsv3.TlsCertificate{
		CertificateChain: dsString(inline(cert)), PrivateKey: dsString(inline(key))}, nil)
	ca := secret("ca", nil, &tlsv3.CertificateValidationContext{TrustedCa: dsString(inline(cert))})
	set("1", good, ca)

	host, port, _ := net.SplitHostPort(ln.Addr().String())
	b, err := config.Parse([]byte(`
node: { id: sds-test }
dynamic_resources:
  ads_config: { api_type: GRPC, transport_api_version: V3, grpc_services: [ { envoy_grpc: { cluster_name: xds } } ] }
static_resources:
  clusters:
  - name: xds
    type: STATIC
    load_assignment: { cluster_name: xds, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: `+host+`, port_value: `+port+` } } } } ] } ] }
`), true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(b, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DrainTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	// What a TLS context will do: ask for its secrets by name.
	s.dyn.src.ads.Watch(xds.SecretType, false, []string{"ca", "cert"})
	waitFor(t, "both secrets", func() bool { return len(s.dyn.secrets.Dump()) == 2 })
	dump := s.ConfigDump()
	admin.Redact(dump)
	js := protojson.Format(dump)
	if strings.Contains(js, "EC PRIVATE KEY") || !strings.Contains(js, "[redacted]") {
		t.Fatalf("private key not redacted in the config dump:\n%s", js)
	}
	if !strings.Contains(js, "dynamicActiveSecrets") {
		t.Fatal("no dynamicActiveSecrets in the config dump")
	}

	// A key that does not match its certificate: NACKed, old one kept.
	set("2", secret("cert", &tlsv3.TlsCertificate{
		CertificateChain: dsString(inline(cert)), PrivateKey: dsString(inline(otherKey))}, nil), ca)
	select {
	case m := <-nacks:
		if !strings.Contains(m, `secret "cert"`) || !strings.Contains(m, "private key does not match public key") {
			t.Fatalf("NACK %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NACK for a mismatched key")
	}
	if v := s.dyn.secrets.Get("cert").Version; v != "1" {
		t.Fatalf("cert version %q after the NACK, want 1", v)
	}
	if st, _ := s.Stats().Lookup("xds.sds.update_rejected"); st == 0 {
		t.Fatal("xds.sds.update_rejected not counted")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dsString(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}
