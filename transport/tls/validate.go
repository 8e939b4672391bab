package tls

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/tlsconfig"
)

// The kinds of verification failure, for the ssl.fail_verify_* stats.
var (
	errVerifyChain = errors.New("certificate chain")
	errVerifySAN   = errors.New("subject alt name")
	errVerifyPin   = errors.New("certificate pin")
)

// validator checks a peer's certificate chain as Envoy's
// CertificateValidationContext says: the chain up to trusted_ca (unless
// ACCEPT_UNTRUSTED), its CRLs, then the leaf's SANs, SPKI or hash pins.
type validator struct {
	roots          *x509.CertPool   // nil: the chain is not verified
	cas            []tlsconfig.Cert // trusted_ca's certificates, for /certs
	sans           []sanMatcher
	spki, hashes   [][]byte // SHA-256 pins; either list accepting is enough
	crls           []*x509.RevocationList
	leafCRLOnly    bool
	allowExpired   bool
	maxDepth       int // 0: no limit
	untrusted      bool
	hasTrustedCA   bool
	suppressCAList bool // suppress_client_ca_list
}

// sanMatcher is one match_typed_subject_alt_names entry (typ 0: any
// type, from the deprecated match_subject_alt_names).
type sanMatcher struct {
	typ tlsv3.SubjectAltNameMatcher_SanType
	m   *router.StringMatcher
}

// buildValidator builds a validation context; path prefixes errors.
func buildValidator(vc *tlsv3.CertificateValidationContext, path string) (*validator, error) {
	v := &validator{leafCRLOnly: vc.GetOnlyVerifyLeafCertCrl(), allowExpired: vc.GetAllowExpiredCertificate(),
		untrusted:      vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED,
		suppressCAList: vc.GetSuppressClientCaList()}
	if vc.GetTrustedCa() != nil {
		pool, cas, err := loadPool(vc.GetTrustedCa())
		if err != nil {
			return nil, config.At(path+".trusted_ca", err)
		}
		v.roots, v.cas, v.hasTrustedCA = pool, cas, true
	}
	if vc.GetSystemRootCerts() != nil {
		if v.roots != nil {
			return nil, config.At(path+".system_root_certs", errors.New("only one of trusted_ca and system_root_certs"))
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, config.At(path+".system_root_certs", err)
		}
		v.roots, v.hasTrustedCA = pool, true
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		p := fmt.Sprintf("%s.match_typed_subject_alt_names[%d]", path, i)
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS, tlsv3.SubjectAltNameMatcher_URI, tlsv3.SubjectAltNameMatcher_EMAIL, tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
		default:
			return nil, config.At(p+".san_type", fmt.Errorf("%s is not supported (DNS, URI, EMAIL, IP_ADDRESS)", m.GetSanType()))
		}
		sm, err := router.CompileStringMatcher(m.GetMatcher(), p+".matcher")
		if err != nil {
			return nil, err
		}
		v.sans = append(v.sans, sanMatcher{typ: m.GetSanType(), m: sm})
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := router.CompileStringMatcher(m, fmt.Sprintf("%s.match_subject_alt_names[%d]", path, i))
		if err != nil {
			return nil, err
		}
		v.sans = append(v.sans, sanMatcher{m: sm})
	}
	for i, s := range vc.GetVerifyCertificateSpki() {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != sha256.Size {
			return nil, config.At(fmt.Sprintf("%s.verify_certificate_spki[%d]", path, i), errors.New("not a base64 SHA-256 digest"))
		}
		v.spki = append(v.spki, b)
	}
	for i, s := range vc.GetVerifyCertificateHash() {
		b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
		if err != nil || len(b) != sha256.Size {
			return nil, config.At(fmt.Sprintf("%s.verify_certificate_hash[%d]", path, i), errors.New("not a hex SHA-256 digest"))
		}
		v.hashes = append(v.hashes, b)
	}
	if vc.GetCrl() != nil {
		b, err := readSource(vc.GetCrl())
		if err != nil {
			return nil, config.At(path+".crl", err)
		}
		for _, der := range tlsconfig.PEMBlocks(b, "X509 CRL") {
			rl, err := x509.ParseRevocationList(der)
			if err != nil {
				return nil, config.At(path+".crl", err)
			}
			v.crls = append(v.crls, rl)
		}
		if len(v.crls) == 0 {
			return nil, config.At(path+".crl", errors.New("no PEM X509 CRL in it"))
		}
	}
	if d := vc.GetMaxVerifyDepth(); d != nil {
		v.maxDepth = int(d.GetValue())
		if v.maxDepth == 0 {
			return nil, config.At(path+".max_verify_depth", errors.New("must be at least 1"))
		}
	}
	return v, nil
}

// hasNameChecks reports whether the context checks the peer's identity
// beyond its chain.
func (v *validator) hasNameChecks() bool {
	return len(v.sans) > 0 || len(v.spki) > 0 || len(v.hashes) > 0
}

// verify checks a peer's chain (leaf first). autoSAN, when set, replaces
// the SAN matchers with one exact DNS name (auto_sni_san_validation).
func (v *validator) verify(certs []*x509.Certificate, autoSAN string) error {
	if len(certs) == 0 {
		return errors.New("no peer certificate")
	}
	leaf := certs[0]
	if v.roots != nil && !v.untrusted {
		chain, err := v.verifyChain(certs)
		if err != nil {
			return fmt.Errorf("%w: %w", errVerifyChain, err)
		}
		if v.maxDepth > 0 && len(chain)-1 > v.maxDepth {
			return fmt.Errorf("%w: chain of %d is deeper than max_verify_depth %d", errVerifyChain, len(chain)-1, v.maxDepth)
		}
		if err := v.checkCRL(chain); err != nil {
			return fmt.Errorf("%w: %w", errVerifyChain, err)
		}
	}
	if autoSAN != "" {
		if !dnsSANMatch(leaf, autoSAN) {
			return fmt.Errorf("%w: no DNS SAN matches the SNI %q", errVerifySAN, autoSAN)
		}
	} else if len(v.sans) > 0 && !v.sanMatch(leaf) {
		return fmt.Errorf("%w: the certificate's SANs match none of the matchers", errVerifySAN)
	}
	if len(v.spki) > 0 || len(v.hashes) > 0 {
		spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		hash := sha256.Sum256(leaf.Raw)
		ok := false
		for _, p := range v.spki {
			ok = ok || bytes.Equal(p, spki[:])
		}
		for _, p := range v.hashes {
			ok = ok || bytes.Equal(p, hash[:])
		}
		if !ok {
			return fmt.Errorf("%w: the certificate matches neither verify_certificate_spki nor verify_certificate_hash", errVerifyPin)
		}
	}
	return nil
}

func (v *validator) verifyChain(certs []*x509.Certificate) ([]*x509.Certificate, error) {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: v.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	chains, err := certs[0].Verify(opts)
	var inv x509.CertificateInvalidError
	if err != nil && v.allowExpired && errors.As(err, &inv) && inv.Reason == x509.Expired && time.Now().After(inv.Cert.NotAfter) {
		// allow_expired_certificate: verify as of a moment the leaf was
		// valid.
		opts.CurrentTime = certs[0].NotAfter.Add(-time.Second)
		chains, err = certs[0].Verify(opts)
	}
	if err != nil {
		return nil, err
	}
	return chains[0], nil
}

// checkCRL: when CRLs are given, every certificate of the chain but the
// root (or the leaf alone) must have its issuer's CRL, signed by that
// issuer, and not be on it (Envoy's rule: a CRL for one CA of a chain
// means one for all).
func (v *validator) checkCRL(chain []*x509.Certificate) error {
	if len(v.crls) == 0 {
		return nil
	}
	n := len(chain) - 1
	if v.leafCRLOnly {
		n = min(n, 1)
	}
	for i := 0; i < n; i++ {
		cert, issuer := chain[i], chain[i+1]
		var rl *x509.RevocationList
		for _, l := range v.crls {
			if bytes.Equal(l.RawIssuer, cert.RawIssuer) && l.CheckSignatureFrom(issuer) == nil {
				rl = l
				break
			}
		}
		if rl == nil {
			return fmt.Errorf("no CRL for the issuer of %q", cert.Subject)
		}
		for _, r := range rl.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return fmt.Errorf("certificate %q is revoked", cert.Subject)
			}
		}
	}
	return nil
}

func (v *validator) sanMatch(leaf *x509.Certificate) bool {
	for _, s := range v.sans {
		any := s.typ == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED
		if any || s.typ == tlsv3.SubjectAltNameMatcher_DNS {
			for _, n := range leaf.DNSNames {
				if dnsMatch(s.m, n) {
					return true
				}
			}
		}
		if any || s.typ == tlsv3.SubjectAltNameMatcher_URI {
			for _, u := range leaf.URIs {
				if s.m.Match(u.String()) {
					return true
				}
			}
		}
		if any || s.typ == tlsv3.SubjectAltNameMatcher_EMAIL {
			for _, e := range leaf.EmailAddresses {
				if s.m.Match(e) {
					return true
				}
			}
		}
		if any || s.typ == tlsv3.SubjectAltNameMatcher_IP_ADDRESS {
			for _, ip := range leaf.IPAddresses {
				if s.m.Match(ip.String()) {
					return true
				}
			}
		}
	}
	return false
}

// dnsMatch matches a DNS SAN: an exact matcher also accepts a wildcard
// SAN covering it ("*.example.com" for "a.example.com"), as Envoy does.
func dnsMatch(m *router.StringMatcher, san string) bool {
	if m.Match(san) {
		return true
	}
	if want, ok := m.Exact(); ok {
		return wildcardCovers(san, want)
	}
	return false
}

// wildcardCovers reports whether a "*." SAN covers name (one label).
func wildcardCovers(san, name string) bool {
	rest, ok := strings.CutPrefix(san, "*.")
	if !ok {
		return false
	}
	i := strings.IndexByte(name, '.')
	return i > 0 && strings.EqualFold(name[i+1:], rest)
}

// dnsSANMatch: some DNS SAN of leaf is name, or a wildcard covering it.
func dnsSANMatch(leaf *x509.Certificate, name string) bool {
	for _, n := range leaf.DNSNames {
		if strings.EqualFold(n, name) || wildcardCovers(n, name) {
			return true
		}
	}
	return false
}
