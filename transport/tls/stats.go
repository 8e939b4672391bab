package tls

import (
	gotls "crypto/tls"
	"errors"
	"strings"

	"github.com/straitproxy/strait/stats"
)

// sslStats are Envoy's ssl.* counters of a listener or a cluster:
// handshake, connection_error, session_reused, no_certificate,
// fail_verify_no_cert, fail_verify_error, fail_verify_san,
// fail_verify_cert_hash, and per negotiated version, cipher and curve.
type sslStats struct {
	sc                                     *stats.Scope
	handshake, connErr, reused, noCert     *stats.Counter
	failNoCert, failErr, failSAN, failHash *stats.Counter
}

func newSSLStats(parent *stats.Scope) *sslStats {
	if parent == nil {
		return nil
	}
	sc := parent.Scope("ssl", "", "")
	return &sslStats{sc: sc, handshake: sc.Counter("handshake"), connErr: sc.Counter("connection_error"),
		reused: sc.Counter("session_reused"), noCert: sc.Counter("no_certificate"),
		failNoCert: sc.Counter("fail_verify_no_cert"), failErr: sc.Counter("fail_verify_error"),
		failSAN: sc.Counter("fail_verify_san"), failHash: sc.Counter("fail_verify_cert_hash")}
}

// done counts a handshake's outcome.
func (s *sslStats) done(cs gotls.ConnectionState, err error) {
	if s == nil {
		return
	}
	if err != nil {
		s.connErr.Inc()
		switch {
		case errors.Is(err, errVerifySAN):
			s.failSAN.Inc()
		case errors.Is(err, errVerifyPin):
			s.failHash.Inc()
		case errors.Is(err, errVerifyChain):
			s.failErr.Inc()
		case strings.Contains(err.Error(), "didn't provide a certificate"):
			s.failNoCert.Inc()
		}
		return
	}
	s.handshake.Inc()
	if cs.DidResume {
		s.reused.Inc()
	}
	if len(cs.PeerCertificates) == 0 {
		s.noCert.Inc()
	}
	s.sc.Counter("versions." + versionName(cs.Version)).Inc()
	s.sc.Counter("ciphers." + cipherName(cs.CipherSuite)).Inc()
	if cs.CurveID != 0 {
		s.sc.Counter("curves." + cs.CurveID.String()).Inc()
	}
}

func versionName(v uint16) string {
	switch v {
	case gotls.VersionTLS12:
		return "TLSv1.2"
	case gotls.VersionTLS13:
		return "TLSv1.3"
	}
	return gotls.VersionName(v)
}

// cipherName is a suite's OpenSSL name (as Envoy's stats spell it) for
// TLS 1.2, its IANA name for TLS 1.3.
func cipherName(id uint16) string {
	for name, c := range cipherNames {
		if c == id {
			return name
		}
	}
	return gotls.CipherSuiteName(id)
}
