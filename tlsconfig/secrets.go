package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
)

// Secrets is the secret store: the SDS secrets accepted, by name. Updates
// are per resource: a secret that a TLS context could not load is
// refused by name and its previous version stays. TLS contexts (the
// transport sockets) will read it; until then secrets are kept and shown,
// redacted, in the config dump.
type Secrets struct {
	mu  sync.Mutex
	set map[string]*config.Resource
}

// NewSecrets makes an empty store.
func NewSecrets() *Secrets { return &Secrets{set: map[string]*config.Resource{}} }

// Apply takes the complete set of secrets; it returns those refused, by
// name.
func (s *Secrets) Apply(set map[string]*config.Resource) map[string]error {
	errs := map[string]error{}
	next := map[string]*config.Resource{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, r := range set {
		if old := s.set[name]; old == r {
			next[name] = r
			continue
		}
		if err := Check(r.Message.(*tlsv3.Secret)); err != nil {
			errs[name] = fmt.Errorf("secret %q: %w", name, err)
			if old := s.set[name]; old != nil {
				next[name] = old
			}
			continue
		}
		next[name] = r
	}
	s.set = next
	return errs
}

// Get returns the secret named name.
func (s *Secrets) Get(name string) *config.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set[name]
}

// Dump returns the secrets, sorted by name.
func (s *Secrets) Dump() []*config.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.set))
	for n := range s.set {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*config.Resource, len(names))
	for i, n := range names {
		out[i] = s.set[n]
	}
	return out
}

// Check refuses a secret that a TLS context could not load: a
// certificate without its key (or the reverse), PEM that does not parse,
// a key that does not match its certificate, a CA bundle with no
// certificate. Files are read when given by name.
func Check(sec *tlsv3.Secret) error {
	if errs := config.ValidationErrors(sec.ValidateAll()); len(errs) > 0 {
		return config.Join(errs)
	}
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		tc := t.TlsCertificate
		cert, err := DataSource(tc.GetCertificateChain())
		if err != nil {
			return config.At("tls_certificate.certificate_chain", err)
		}
		key, err := DataSource(tc.GetPrivateKey())
		if err != nil {
			return config.At("tls_certificate.private_key", err)
		}
		if cert == nil || key == nil {
			return config.At("tls_certificate", errors.New("certificate_chain and private_key are both required"))
		}
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			return config.At("tls_certificate", err)
		}
	case *tlsv3.Secret_ValidationContext:
		ca, err := DataSource(t.ValidationContext.GetTrustedCa())
		if err != nil {
			return config.At("validation_context.trusted_ca", err)
		}
		if ca != nil && !x509.NewCertPool().AppendCertsFromPEM(ca) {
			return config.At("validation_context.trusted_ca", errors.New("no PEM certificate found"))
		}
	case nil:
		return errors.New("a secret needs a type (tls_certificate or validation_context)")
	default:
		return fmt.Errorf("secret type %T is not supported (supported: tls_certificate, validation_context)", t)
	}
	return nil
}

// DataSource reads an inline or file data source (nil when unset).
func DataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case nil:
		return nil, nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		return os.ReadFile(s.Filename)
	}
	return nil, fmt.Errorf("unsupported data source")
}
