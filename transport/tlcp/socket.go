package tlcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/emmansun/gmsm/smx509"
	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/tlsconfig"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The transport socket's name and the type URL of its config (a
// TypedStruct: README.md).
const (
	Name    = "strait.transport_sockets.tlcp"
	TypeURL = "type.googleapis.com/strait.extensions.transport_sockets.tlcp.v1.Tlcp"
)

func init() {
	transport.RegisterStruct(Name, TypeURL, func(bc *transport.BuildContext, m proto.Message) (transport.Downstream, error) {
		return buildDownstream(bc, m.(*structpb.Struct))
	})
	transport.RegisterUpstreamStruct(Name, TypeURL, func(bc *transport.BuildContext, m proto.Message) (transport.Upstream, error) {
		return buildUpstream(bc, m.(*structpb.Struct))
	})
}

// settings is the config's value.
type settings struct {
	SignCertificate          *certPair       `json:"sign_certificate"`
	EncryptionCertificate    *certPair       `json:"encryption_certificate"`
	CipherSuites             []string        `json:"cipher_suites"`
	TrustedCA                json.RawMessage `json:"trusted_ca"`
	RequireClientCertificate bool            `json:"require_client_certificate"`
	SNI                      string          `json:"sni"`
	SessionCacheSize         *int            `json:"session_cache_size"`
	SessionTimeout           string          `json:"session_timeout"`
}

// certPair is a certificate chain and its key, each a DataSource
// (filename, inline_string, inline_bytes).
type certPair struct {
	CertificateChain json.RawMessage `json:"certificate_chain"`
	PrivateKey       json.RawMessage `json:"private_key"`
}

const (
	defaultHandshakeTimeout = 10 * time.Second
	defaultSessions         = 1024
	defaultSessionTimeout   = 300 * time.Second
)

// readDataSource reads an Envoy DataSource given as JSON.
func readDataSource(raw json.RawMessage) ([]byte, error) {
	var ds corev3.DataSource
	if err := protojson.Unmarshal(raw, &ds); err != nil {
		return nil, err
	}
	b, err := tlsconfig.DataSource(&ds)
	if err == nil && len(b) == 0 {
		err = errors.New("empty")
	}
	return b, err
}

func (p *certPair) load() (*Certificate, error) {
	if p.CertificateChain == nil {
		return nil, config.At("certificate_chain", errors.New("required"))
	}
	if p.PrivateKey == nil {
		return nil, config.At("private_key", errors.New("required"))
	}
	chain, err := readDataSource(p.CertificateChain)
	if err != nil {
		return nil, config.At("certificate_chain", err)
	}
	key, err := readDataSource(p.PrivateKey)
	if err != nil {
		return nil, config.At("private_key", err)
	}
	return LoadCertificate(chain, key)
}

// certReport is what /certs shows of a context: its trusted CAs, then
// the signing and encryption certificates.
type certReport struct{ cas, chain []tlsconfig.Cert }

// Certificates implements transport.CertReporter for both sides.
func (r *certReport) Certificates(now time.Time) *adminv3.Certificate {
	return tlsconfig.Certificates(r.cas, r.chain, now)
}

// smCert describes an SM2 certificate.
func smCert(source string, c *smx509.Certificate) tlsconfig.Cert {
	return tlsconfig.Cert{Source: source, Serial: c.SerialNumber, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		DNS: c.DNSNames, URIs: c.URIs, IPs: c.IPAddresses}
}

// sourceName names a DataSource given as JSON as /certs does.
func sourceName(raw json.RawMessage) string {
	var ds corev3.DataSource
	_ = protojson.Unmarshal(raw, &ds)
	return tlsconfig.SourceName(&ds)
}

// common builds what both sides share: certificates, suites, the
// trusted CA, the session cache.
func (s *settings) common(cfg *Config) (*certReport, error) {
	r := &certReport{}
	if s.SignCertificate != nil {
		c, err := s.SignCertificate.load()
		if err != nil {
			return nil, config.At("sign_certificate", err)
		}
		cfg.SignCert = c
		r.chain = append(r.chain, smCert(sourceName(s.SignCertificate.CertificateChain), c.Leaf))
	}
	if s.EncryptionCertificate != nil {
		c, err := s.EncryptionCertificate.load()
		if err != nil {
			return nil, config.At("encryption_certificate", err)
		}
		cfg.EncCert = c
		r.chain = append(r.chain, smCert(sourceName(s.EncryptionCertificate.CertificateChain), c.Leaf))
	}
	if cfg.EncCert != nil && cfg.SignCert == nil {
		return nil, config.At("sign_certificate", errors.New("required with an encryption certificate"))
	}
	for i, n := range s.CipherSuites {
		id, ok := SuiteByName(n)
		if !ok {
			return nil, config.At(fmt.Sprintf("cipher_suites[%d]", i), fmt.Errorf("%q: not one of ECC_SM4_GCM_SM3, ECC_SM4_CBC_SM3, ECDHE_SM4_GCM_SM3, ECDHE_SM4_CBC_SM3", n))
		}
		cfg.Suites = append(cfg.Suites, id)
	}
	if s.TrustedCA != nil {
		b, err := readDataSource(s.TrustedCA)
		if err != nil {
			return nil, config.At("trusted_ca", err)
		}
		pool := smx509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, config.At("trusted_ca", errors.New("no PEM certificate"))
		}
		cfg.ClientCAs, cfg.RootCAs = pool, pool
		for _, der := range tlsconfig.PEMBlocks(b, "CERTIFICATE") {
			if c, err := smx509.ParseCertificate(der); err == nil {
				r.cas = append(r.cas, smCert(sourceName(s.TrustedCA), c))
			}
		}
	}
	n, life := defaultSessions, defaultSessionTimeout
	if s.SessionCacheSize != nil {
		if n = *s.SessionCacheSize; n < 0 {
			return nil, config.At("session_cache_size", errors.New("must be >= 0"))
		}
	}
	if s.SessionTimeout != "" {
		d, err := time.ParseDuration(s.SessionTimeout)
		if err != nil || d <= 0 {
			return nil, config.At("session_timeout", fmt.Errorf("%q: a positive duration such as \"300s\"", s.SessionTimeout))
		}
		life = d
	}
	if n > 0 {
		cfg.Sessions = NewSessionCache(n, life)
	}
	return r, nil
}

// offersECC reports whether suites (empty: the defaults) hold an ECC
// suite, which needs no client certificate.
func offersECC(ids []uint16) bool {
	if len(ids) == 0 {
		return true
	}
	for _, id := range ids {
		if s := suiteByID(id); s != nil && !s.ecdhe {
			return true
		}
	}
	return false
}

func decode(m *structpb.Struct) (*settings, error) {
	var s settings
	if err := config.DecodeStruct(m, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// downstream is a built TLCP server context.
type downstream struct {
	*certReport
	cfg       *Config
	handshake time.Duration
	stats     *sslStats
}

func buildDownstream(bc *transport.BuildContext, m *structpb.Struct) (*downstream, error) {
	s, err := decode(m)
	if err != nil {
		return nil, err
	}
	if s.SNI != "" {
		return nil, config.At("sni", errors.New("an upstream field"))
	}
	cfg := &Config{}
	report, err := s.common(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.SignCert == nil {
		return nil, config.At("sign_certificate", errors.New("required"))
	}
	if cfg.EncCert == nil {
		return nil, config.At("encryption_certificate", errors.New("required"))
	}
	cfg.RootCAs = nil
	if !offersECC(cfg.Suites) && cfg.ClientCAs == nil {
		return nil, config.At("cipher_suites", errors.New("only ECDHE suites, which need client certificates: give trusted_ca, or an ECC suite"))
	}
	switch {
	case s.RequireClientCertificate && cfg.ClientCAs == nil:
		return nil, config.At("require_client_certificate", errors.New("needs trusted_ca"))
	case s.RequireClientCertificate:
		cfg.ClientAuth = RequireAndVerifyClientCert
	case cfg.ClientCAs != nil:
		cfg.ClientAuth = VerifyClientCertIfGiven
	}
	d := &downstream{certReport: report, cfg: cfg, handshake: defaultHandshakeTimeout, stats: newSSLStats(bc.Stats)}
	if bc.HandshakeTimeout > 0 {
		d.handshake = bc.HandshakeTimeout
	}
	return d, nil
}

// Wrap implements transport.Downstream (netpoll: a blocking socket).
func (d *downstream) Wrap(s network.Socket) (network.Socket, error) {
	nc, ok := s.(net.Conn)
	if !ok {
		return nil, errors.New("TLCP: this socket cannot be wrapped")
	}
	return transport.NewBlocking(Server(nc, d.cfg), s, d.handshake, d.done), nil
}

// Transport implements transport.NonBlocking (epoll).
func (d *downstream) Transport(c *network.Conn) (transport.Socket, error) {
	return transport.NewNonBlocking(c, d.handshake,
		func(nc net.Conn) transport.Session { return Server(nc, d.cfg) }, d.done), nil
}

// done counts a handshake's outcome.
func (d *downstream) done(s transport.Session, err error) { d.stats.done(s.(*Conn), err) }

// upstream is a built TLCP client context.
type upstream struct {
	*certReport
	cfg   *Config
	stats *sslStats
}

func buildUpstream(bc *transport.BuildContext, m *structpb.Struct) (*upstream, error) {
	s, err := decode(m)
	if err != nil {
		return nil, err
	}
	if s.RequireClientCertificate {
		return nil, config.At("require_client_certificate", errors.New("a downstream field"))
	}
	cfg := &Config{ServerName: s.SNI}
	report, err := s.common(cfg)
	if err != nil {
		return nil, err
	}
	cfg.ClientCAs = nil
	if !offersECC(cfg.Suites) && (cfg.SignCert == nil || cfg.EncCert == nil) {
		return nil, config.At("cipher_suites", errors.New("only ECDHE suites, which need sign_certificate and encryption_certificate"))
	}
	// As Envoy's upstream TLS: without a trusted CA the server's
	// certificates are not verified.
	cfg.InsecureSkipVerify = cfg.RootCAs == nil
	return &upstream{certReport: report, cfg: cfg, stats: newSSLStats(bc.Stats)}, nil
}

// Client implements transport.Upstream. TLCP has no ALPN: the cluster's
// protocol is what its config says.
func (u *upstream) Client(ctx context.Context, nc net.Conn, hostname string, _ transport.ALPN) (net.Conn, error) {
	c := Client(nc, u.cfg)
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	err := c.Handshake()
	if !stop() && err == nil {
		// The context ended as the handshake did: its deadline may land
		// after the reset below, so the connection is not handed out.
		err = ctx.Err()
	}
	nc.SetDeadline(time.Time{})
	u.stats.done(c, err)
	if err != nil {
		return nil, err
	}
	return &clientConn{c}, nil
}

// clientConn gives an upstream connection its half-close.
type clientConn struct{ *Conn }

func (c *clientConn) CloseWrite() error {
	c.Conn.CloseWrite()
	if cw, ok := c.Conn.NetConn().(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// sslStats are Envoy's ssl.* counters for TLCP handshakes: handshake,
// connection_error, session_reused, no_certificate, versions.TLCP and
// ciphers.<suite>.
type sslStats struct {
	sc                                 *stats.Scope
	handshake, connErr, reused, noCert *stats.Counter
}

func newSSLStats(parent *stats.Scope) *sslStats {
	if parent == nil {
		return nil
	}
	sc := parent.Scope("ssl", "", "")
	return &sslStats{sc: sc, handshake: sc.Counter("handshake"), connErr: sc.Counter("connection_error"),
		reused: sc.Counter("session_reused"), noCert: sc.Counter("no_certificate")}
}

func (s *sslStats) done(c *Conn, err error) {
	if s == nil {
		return
	}
	if err != nil {
		s.connErr.Inc()
		return
	}
	s.handshake.Inc()
	if c.resumed {
		s.reused.Inc()
	}
	if len(c.peer) == 0 {
		s.noCert.Inc()
	}
	s.sc.Counter("versions.TLCP").Inc()
	s.sc.Counter("ciphers." + c.suite.name).Inc()
}
