// Package tls is envoy.transport_sockets.tls for accepted connections
// (DownstreamTlsContext), on Go's crypto/tls unmodified.
//
// This first slice terminates TLS on listeners under the netpoll I/O
// model: certificate chains and keys from files or inline (several per
// context: crypto/tls chooses by the client's SNI and signature
// algorithms), alpn_protocols (h2 reaches the HTTP/2 codec), tls_params
// protocol versions (TLS 1.2 minimum by default), and client certificates
// checked against validation_context.trusted_ca with
// require_client_certificate. Every other field is refused with its path.
package tls

import (
	gotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
)

// Name is the transport socket's name.
const Name = "envoy.transport_sockets.tls"

// handshakeTimeout bounds a handshake (Envoy bounds it with the
// listener's transport_socket_connect_timeout, not supported yet).
const handshakeTimeout = 10 * time.Second

func init() {
	transport.Register(Name, &tlsv3.DownstreamTlsContext{}, func(_ *transport.BuildContext, m proto.Message) (transport.Downstream, error) {
		return build(m.(*tlsv3.DownstreamTlsContext))
	})
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":         `common_tls_context require_client_certificate`,
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext":             `tls_certificates alpn_protocols tls_params validation_context`,
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate":               `certificate_chain private_key`,
	"envoy.extensions.transport_sockets.tls.v3.TlsParameters":                `tls_minimum_protocol_version tls_maximum_protocol_version`,
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": `trusted_ca`,
	"envoy.config.core.v3.DataSource":                                        `filename inline_bytes inline_string`,
})

type downstream struct{ cfg *gotls.Config }

func build(m *tlsv3.DownstreamTlsContext) (*downstream, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	ctx := m.GetCommonTlsContext()
	if len(ctx.GetTlsCertificates()) == 0 {
		return nil, config.At("common_tls_context.tls_certificates", errors.New("at least one certificate is required"))
	}
	cfg, err := commonConfig(ctx)
	if err != nil {
		return nil, err
	}
	if vc := ctx.GetValidationContext(); vc != nil {
		pool, err := loadPool(vc.GetTrustedCa())
		if err != nil {
			return nil, config.At("common_tls_context.validation_context.trusted_ca", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = gotls.VerifyClientCertIfGiven
	}
	if m.GetRequireClientCertificate().GetValue() {
		if cfg.ClientCAs == nil {
			return nil, config.At("require_client_certificate", errors.New("needs common_tls_context.validation_context.trusted_ca"))
		}
		cfg.ClientAuth = gotls.RequireAndVerifyClientCert
	}
	return &downstream{cfg: cfg}, nil
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

// commonConfig is what both sides take of a CommonTlsContext: the
// certificates, ALPN and protocol versions (TLS 1.2 minimum by default).
func commonConfig(ctx *tlsv3.CommonTlsContext) (*gotls.Config, error) {
	cfg := &gotls.Config{MinVersion: gotls.VersionTLS12, NextProtos: ctx.GetAlpnProtocols()}
	for i, tc := range ctx.GetTlsCertificates() {
		cert, err := loadPair(tc, fmt.Sprintf("common_tls_context.tls_certificates[%d]", i))
		if err != nil {
			return nil, err
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	if p := ctx.GetTlsParams(); p != nil {
		var err error
		if cfg.MinVersion, err = version(p.GetTlsMinimumProtocolVersion(), gotls.VersionTLS12); err != nil {
			return nil, config.At("common_tls_context.tls_params.tls_minimum_protocol_version", err)
		}
		if cfg.MaxVersion, err = version(p.GetTlsMaximumProtocolVersion(), 0); err != nil {
			return nil, config.At("common_tls_context.tls_params.tls_maximum_protocol_version", err)
		}
	}
	return cfg, nil
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

// loadPool reads PEM certificates into a pool.
func loadPool(ds *corev3.DataSource) (*x509.CertPool, error) {
	pem, err := readSource(ds)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// readSource reads a DataSource: a file, or inline bytes or text.
func readSource(ds *corev3.DataSource) ([]byte, error) {
	switch {
	case ds == nil:
		return nil, errors.New("required")
	case ds.GetFilename() != "":
		return os.ReadFile(ds.GetFilename())
	case ds.GetInlineBytes() != nil:
		return ds.GetInlineBytes(), nil
	case ds.GetInlineString() != "":
		return []byte(ds.GetInlineString()), nil
	}
	return nil, errors.New("empty")
}

// Wrap implements transport.Downstream: a server-side TLS connection over
// s, which must be a blocking net.Conn (netpoll).
func (d *downstream) Wrap(s network.Socket) (network.Socket, error) {
	nc, ok := s.(net.Conn)
	if !ok {
		return nil, errors.New("TLS needs the netpoll I/O model")
	}
	return &socket{Conn: gotls.Server(nc, d.cfg), raw: s}, nil
}

// socket is a TLS connection as a network.Socket.
type socket struct {
	*gotls.Conn
	raw       network.Socket
	handshook bool // read side only: the reader's first Read
}

// Read completes the handshake (bounded) on the first call.
func (s *socket) Read(p []byte) (int, error) {
	if !s.handshook {
		s.handshook = true
		s.Conn.SetDeadline(time.Now().Add(handshakeTimeout))
		err := s.Conn.Handshake()
		s.Conn.SetDeadline(time.Time{})
		if err != nil {
			return 0, err
		}
	}
	return s.Conn.Read(p)
}

// CloseWrite sends close_notify, then half-closes the TCP connection.
func (s *socket) CloseWrite() error {
	s.Conn.CloseWrite()
	return s.raw.CloseWrite()
}
