package tlsconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/types/known/anypb"
)

func selfSigned(t *testing.T, serial int64) *tlsv3.Secret {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	ds := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	return &tlsv3.Secret{Name: "cert", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: ds(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		PrivateKey:       ds(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))}}}
}

func resource(t *testing.T, s *tlsv3.Secret, v string) *config.Resource {
	a, err := anypb.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return &config.Resource{Name: s.GetName(), Version: v, Message: s, Any: a}
}

// TestSecretRefusedByWatcher: a version a TLS context cannot build with
// is refused as a whole: the store keeps the previous version, the
// watcher that refused keeps it, a watcher that comes later gets it, and
// a watcher never goes back to an older version.
func TestSecretRefusedByWatcher(t *testing.T) {
	s := NewSecrets()
	defer s.Close()
	cs := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	v1, v2 := selfSigned(t, 1), selfSigned(t, 2)
	var got []int64
	refuse := false
	serial := func(sec *tlsv3.Secret) int64 {
		blk, _ := pem.Decode(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
		c, _ := x509.ParseCertificate(blk.Bytes)
		return c.SerialNumber.Int64()
	}
	if _, err := s.Watch("cert", cs, func(sec *tlsv3.Secret) error {
		if refuse && serial(sec) == 2 {
			return errors.New("cannot build")
		}
		got = append(got, serial(sec))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if errs := s.Apply(map[string]*config.Resource{"cert": resource(t, v1, "1")}); len(errs) != 0 {
		t.Fatal(errs)
	}
	refuse = true
	errs := s.Apply(map[string]*config.Resource{"cert": resource(t, v2, "2")})
	if errs["cert"] == nil {
		t.Fatal("a version the watcher refused was not NACKed")
	}
	if v := s.Get("cert").Version; v != "1" {
		t.Fatalf("the store serves version %s after the refusal, want 1", v)
	}
	var late []int64
	if _, err := s.Watch("cert", cs, func(sec *tlsv3.Secret) error { late = append(late, serial(sec)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(late) != 1 || late[0] != 1 {
		t.Fatalf("a later watcher got %v, want [1]", late)
	}
	if len(got) == 0 || got[len(got)-1] != 1 {
		t.Fatalf("the refusing watcher saw %v, want it to end on 1", got)
	}
	w := &watcher{fn: func(*tlsv3.Secret) error { t.Fatal("an older version was delivered"); return nil }, seen: 5}
	w.deliver(v1, 4)
}
