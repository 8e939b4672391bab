package tls

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/encoding/protojson"
)

// fakeSDS delivers the secrets it has at once, never the others.
type fakeSDS map[string]*tlsv3.Secret

func (f fakeSDS) Watch(name string, _ *corev3.ConfigSource, fn func(*tlsv3.Secret) error) (func(), error) {
	if s := f[name]; s != nil {
		fn(s)
	}
	return func() {}, nil
}

// TestFetchTimeout: a context waits for its missing SDS secrets as long
// as the longest initial_fetch_timeout of their sources (15 s when one
// gives none), for ever when one gives 0; SecretsWait combines sockets
// so.
func TestFetchTimeout(t *testing.T) {
	ref := func(name, timeout string) string {
		t := ""
		if timeout != "" {
			t = `,"initial_fetch_timeout":"` + timeout + `"`
		}
		return `{"name":"` + name + `","sds_config":{"ads":{}` + t + `}}`
	}
	src := fakeSDS{}
	build := func(certTimeout, caTimeout string) *upstream {
		var m tlsv3.UpstreamTlsContext
		js := `{"common_tls_context":{"tls_certificate_sds_secret_configs":[` + ref("c", certTimeout) + `],
			"validation_context_sds_secret_config":` + ref("ca", caTimeout) + `}}`
		if err := protojson.Unmarshal([]byte(js), &m); err != nil {
			t.Fatal(err)
		}
		u, err := buildUpstream(&transport.BuildContext{Secrets: src, Stats: stats.NewStore().Root()}, &m)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		cert, ca string
		want     time.Duration
	}{
		{"", "", 15 * time.Second},
		{"0.3s", "1s", time.Second},
		{"0.3s", "", 15 * time.Second},
		{"0s", "1s", 0},
		{"1s", "0s", 0},
	} {
		u := build(tc.cert, tc.ca)
		if u.Ready() {
			t.Fatal("ready without its secrets")
		}
		if got := u.FetchTimeout(); got != tc.want {
			t.Errorf("cert %q, ca %q: %v, want %v", tc.cert, tc.ca, got, tc.want)
		}
	}
	if d, waiting := transport.SecretsWait(build("2s", "2s"), build("0.5s", "0.5s")); d != 2*time.Second || !waiting {
		t.Errorf("SecretsWait: %v %v, want the longest, 2s", d, waiting)
	}
	if d, waiting := transport.SecretsWait(build("2s", "2s"), build("0s", "1s")); d != 0 || !waiting {
		t.Errorf("SecretsWait: %v %v, want 0 (for ever)", d, waiting)
	}
	// Only the secrets still missing count: the CA (for ever) came, the
	// certificate (1 s) did not.
	src["ca"] = &tlsv3.Secret{Name: "ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{}}}
	if u := build("1s", "0s"); u.Ready() || u.FetchTimeout() != time.Second {
		t.Errorf("with the CA arrived: ready %v, wait %v, want 1s", u.Ready(), u.FetchTimeout())
	}
	if _, waiting := transport.SecretsWait(); waiting {
		t.Error("SecretsWait of no socket waits")
	}
}
