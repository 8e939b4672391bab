package tlcp

import (
	"crypto/ecdsa"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"github.com/straitproxy/strait/tlsconfig"
)

// Certificate is an SM2 certificate with its chain and key.
type Certificate struct {
	// Chain is DER: the certificate, then the intermediates toward a root.
	Chain [][]byte
	Leaf  *smx509.Certificate
	Key   *sm2.PrivateKey
}

// LoadCertificate parses a PEM chain (the certificate first) and its PEM
// SM2 key (PKCS#8 or SEC 1), and checks that they match.
func LoadCertificate(chainPEM, keyPEM []byte) (*Certificate, error) {
	c := &Certificate{Chain: tlsconfig.PEMBlocks(chainPEM, "CERTIFICATE")}
	if len(c.Chain) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	leaf, err := smx509.ParseCertificate(c.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	c.Leaf = leaf
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !sm2.IsSM2PublicKey(pub) {
		return nil, errors.New("the certificate's key is not an SM2 key")
	}
	var kb *pem.Block
	for rest := keyPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" && !isParams(b.Type) {
			kb = b
			break
		}
	}
	if kb == nil {
		return nil, errors.New("no PEM private key")
	}
	c.Key, err = parseKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	if !c.Key.PublicKey.Equal(pub) {
		return nil, errors.New("the private key does not match the certificate")
	}
	return c, nil
}

func isParams(t string) bool { return t == "EC PARAMETERS" || t == "SM2 PARAMETERS" }

func parseKey(der []byte) (*sm2.PrivateKey, error) {
	if k, err := smx509.ParsePKCS8PrivateKey(der); err == nil {
		if sk, ok := k.(*sm2.PrivateKey); ok {
			return sk, nil
		}
		return nil, errors.New("the private key is not an SM2 key")
	}
	k, err := smx509.ParseSM2PrivateKey(der)
	if err != nil {
		return nil, errors.New("the private key is neither PKCS#8 nor SEC 1 SM2")
	}
	return k, nil
}

// ClientAuth is a server's policy on client certificates.
type ClientAuth int

const (
	// NoClientCert asks for none.
	NoClientCert ClientAuth = iota
	// VerifyClientCertIfGiven asks for one and verifies it when sent.
	VerifyClientCertIfGiven
	// RequireAndVerifyClientCert refuses a client without a valid one.
	RequireAndVerifyClientCert
)

// Config configures a Conn. It is not changed after use.
type Config struct {
	// SignCert and EncCert: the signing and the encryption certificate.
	// A server needs both; a client sends them for client
	// authentication (the encryption one only for ECDHE suites, which
	// need it).
	SignCert, EncCert *Certificate
	// Suites in order of preference (the server's order decides);
	// DefaultSuites when empty.
	Suites []uint16

	// ClientAuth and ClientCAs: a server's check of client certificates.
	// ECDHE suites need the client's encryption certificate, so a
	// server chooses them only when it asks for certificates.
	ClientAuth ClientAuth
	ClientCAs  *smx509.CertPool

	// RootCAs verify a server's certificates (a client); ServerName is
	// sent as SNI and checked against the signing certificate.
	RootCAs            *smx509.CertPool
	ServerName         string
	InsecureSkipVerify bool

	// VerifyPeer runs after the chain is verified, with the peer's
	// certificates (signing first); its error fails the handshake.
	VerifyPeer func(certs []*smx509.Certificate) error

	// Sessions keeps sessions for resumption by session ID (nil: none).
	Sessions *SessionCache

	// Time is the clock for certificate validity (time.Now when nil).
	Time func() time.Time
}

func (c *Config) suites() []uint16 {
	if len(c.Suites) > 0 {
		return c.Suites
	}
	return DefaultSuites
}

func (c *Config) now() time.Time {
	if c.Time != nil {
		return c.Time()
	}
	return time.Now()
}

// session is what resumption needs.
type session struct {
	id      []byte
	suite   uint16
	master  []byte
	peer    []*smx509.Certificate
	created time.Time
}

// SessionCache is a bounded cache of sessions: by session ID on a
// server, by server name and address on a client. The oldest goes first
// when it is full; entries older than the lifetime are not resumed.
type SessionCache struct {
	mu       sync.Mutex
	max      int
	lifetime time.Duration
	m        map[string]*session
	order    []string
}

// NewSessionCache keeps up to max sessions for lifetime each.
func NewSessionCache(max int, lifetime time.Duration) *SessionCache {
	return &SessionCache{max: max, lifetime: lifetime, m: make(map[string]*session)}
}

func (s *SessionCache) get(key string, now time.Time) *session {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[key]
	if e == nil || now.Sub(e.created) > s.lifetime {
		return nil
	}
	return e
}

func (s *SessionCache) put(key string, e *session) {
	if s == nil || s.max <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok {
		for len(s.order) >= s.max {
			delete(s.m, s.order[0])
			s.order = s.order[1:]
		}
		s.order = append(s.order, key)
	}
	s.m[key] = e
}

// Len is the number of sessions kept.
func (s *SessionCache) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
