package tls

import (
	gotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/tlsconfig"
)

// What both sides take of a CommonTlsContext.
var commonSupport = map[string]string{
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": `tls_certificates alpn_protocols tls_params validation_context
		tls_certificate_sds_secret_configs validation_context_sds_secret_config combined_validation_context`,
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": `default_validation_context
		validation_context_sds_secret_config`,
	"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig": `name sds_config`,
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate":  `certificate_chain private_key`,
	"envoy.extensions.transport_sockets.tls.v3.TlsParameters": `tls_minimum_protocol_version tls_maximum_protocol_version
		cipher_suites ecdh_curves`,
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": `trusted_ca system_root_certs
		match_typed_subject_alt_names match_subject_alt_names verify_certificate_spki verify_certificate_hash
		crl only_verify_leaf_cert_crl allow_expired_certificate trust_chain_verification max_verify_depth
		suppress_client_ca_list`,
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": `san_type matcher`,
	"envoy.config.core.v3.DataSource":                                 `filename inline_bytes inline_string`,
}

func support(extra map[string]string) config.Support {
	t := map[string]string{}
	for k, v := range commonSupport {
		t[k] = v
	}
	for k, v := range extra {
		t[k] = v
	}
	return config.NewSupport(t)
}

// defaultCiphers are Envoy's default TLS 1.2 suites (ECDHE with AEAD
// only); TLS 1.3's are not configurable, in Envoy as in Go.
var defaultCiphers = []uint16{
	gotls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, gotls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	gotls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, gotls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	gotls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, gotls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// cipherNames are the TLS 1.2 suites by their OpenSSL names (as Envoy
// takes them).
var cipherNames = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": gotls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   gotls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": gotls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   gotls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": gotls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   gotls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        gotls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          gotls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        gotls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          gotls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             gotls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             gotls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    gotls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    gotls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

var curveNames = map[string]gotls.CurveID{
	"X25519": gotls.X25519, "P-256": gotls.CurveP256, "P-384": gotls.CurveP384, "P-521": gotls.CurveP521,
	"X25519MLKEM768": gotls.X25519MLKEM768,
}

// version maps Envoy's TLS versions; TLS_AUTO is def (0: Go's maximum).
func version(v tlsv3.TlsParameters_TlsProtocol, def uint16) (uint16, error) {
	switch v {
	case tlsv3.TlsParameters_TLS_AUTO:
		return def, nil
	case tlsv3.TlsParameters_TLSv1_2:
		return gotls.VersionTLS12, nil
	case tlsv3.TlsParameters_TLSv1_3:
		return gotls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%s is not supported (TLS 1.2 and 1.3 only)", v)
}

// common is a built CommonTlsContext: a config template (certificates,
// ALPN, versions, suites, curves) and the peer validation (nil: none).
type common struct {
	cfg   *gotls.Config
	val   *validator
	certs []tlsconfig.Cert // the leaf of each certificate, for /certs
}

// buildCommon builds what both sides take of a CommonTlsContext.
func buildCommon(ctx *tlsv3.CommonTlsContext) (*common, error) {
	cfg := &gotls.Config{MinVersion: gotls.VersionTLS12, NextProtos: ctx.GetAlpnProtocols(), CipherSuites: defaultCiphers}
	c := &common{cfg: cfg}
	for i, tc := range ctx.GetTlsCertificates() {
		cert, err := loadPair(tc, fmt.Sprintf("common_tls_context.tls_certificates[%d]", i))
		if err != nil {
			return nil, err
		}
		cfg.Certificates = append(cfg.Certificates, cert)
		leaf := cert.Leaf // nil under GODEBUG=x509keypairleaf=0
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return nil, config.At(fmt.Sprintf("common_tls_context.tls_certificates[%d].certificate_chain", i), err)
			}
		}
		c.certs = append(c.certs, tlsconfig.FromX509(tlsconfig.SourceName(tc.GetCertificateChain()), leaf))
	}
	if p := ctx.GetTlsParams(); p != nil {
		const path = "common_tls_context.tls_params"
		var err error
		if cfg.MinVersion, err = version(p.GetTlsMinimumProtocolVersion(), gotls.VersionTLS12); err != nil {
			return nil, config.At(path+".tls_minimum_protocol_version", err)
		}
		if cfg.MaxVersion, err = version(p.GetTlsMaximumProtocolVersion(), 0); err != nil {
			return nil, config.At(path+".tls_maximum_protocol_version", err)
		}
		if cfg.MaxVersion != 0 && cfg.MaxVersion < cfg.MinVersion {
			return nil, config.At(path, errors.New("tls_maximum_protocol_version is below tls_minimum_protocol_version"))
		}
		if cs := p.GetCipherSuites(); len(cs) > 0 {
			cfg.CipherSuites = nil
			for i, entry := range cs {
				// "[A|B]" is an equal-preference group.
				for _, name := range strings.Split(strings.Trim(entry, "[]"), "|") {
					id, ok := cipherNames[name]
					if !ok {
						return nil, config.At(fmt.Sprintf("%s.cipher_suites[%d]", path, i), fmt.Errorf("unknown or unsupported TLS 1.2 cipher suite %q", name))
					}
					cfg.CipherSuites = append(cfg.CipherSuites, id)
				}
			}
		}
		for i, name := range p.GetEcdhCurves() {
			id, ok := curveNames[name]
			if !ok {
				return nil, config.At(fmt.Sprintf("%s.ecdh_curves[%d]", path, i), fmt.Errorf("unknown curve %q (X25519, P-256, P-384, P-521, X25519MLKEM768)", name))
			}
			cfg.CurvePreferences = append(cfg.CurvePreferences, id)
		}
	}
	if vc := ctx.GetValidationContext(); vc != nil {
		v, err := buildValidator(vc, "common_tls_context.validation_context")
		if err != nil {
			return nil, err
		}
		if len(v.sans) > 0 && !v.hasTrustedCA && !v.untrusted {
			return nil, config.At("common_tls_context.validation_context", errors.New("SAN matchers without a trusted CA would accept any self-signed certificate: give trusted_ca"))
		}
		c.val = v
	}
	return c, nil
}

// loadPair loads a certificate chain and its key.
func loadPair(tc *tlsv3.TlsCertificate, path string) (gotls.Certificate, error) {
	chain, err := readSource(tc.GetCertificateChain())
	if err != nil {
		return gotls.Certificate{}, config.At(path+".certificate_chain", err)
	}
	key, err := readSource(tc.GetPrivateKey())
	if err != nil {
		return gotls.Certificate{}, config.At(path+".private_key", err)
	}
	cert, err := gotls.X509KeyPair(chain, key)
	return cert, config.At(path, err)
}

// loadPool reads PEM certificates into a pool, and describes them.
func loadPool(ds *corev3.DataSource) (*x509.CertPool, []tlsconfig.Cert, error) {
	pem, err := readSource(ds)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, errors.New("no PEM certificate in it")
	}
	return pool, tlsconfig.ParsePEM(tlsconfig.SourceName(ds), pem), nil
}

// report is the context's /certs entry at now.
func (c *common) report(now time.Time) *adminv3.Certificate {
	var cas []tlsconfig.Cert
	if c.val != nil {
		cas = c.val.cas
	}
	return tlsconfig.Certificates(cas, c.certs, now)
}

// readSource reads a DataSource (tlsconfig.DataSource), which must be
// set and not empty.
func readSource(ds *corev3.DataSource) ([]byte, error) {
	if ds == nil {
		return nil, errors.New("required")
	}
	b, err := tlsconfig.DataSource(ds)
	if err == nil && len(b) == 0 {
		err = errors.New("empty")
	}
	return b, err
}
