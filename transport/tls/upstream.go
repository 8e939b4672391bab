package tls

import (
	"context"
	gotls "crypto/tls"
	"crypto/x509"
	"errors"
	"net"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
)

// Upstream TLS (UpstreamTlsContext), as Envoy has it: without a
// validation context the upstream's certificate is not verified; with
// trusted_ca its chain is verified (not its names: SAN matching is not
// supported yet); sni is sent when set.

func init() {
	transport.RegisterUpstream(Name, &tlsv3.UpstreamTlsContext{}, func(_ *transport.BuildContext, m proto.Message) (transport.Upstream, error) {
		return buildUpstream(m.(*tlsv3.UpstreamTlsContext))
	})
}

var supportedUpstream = config.NewSupport(map[string]string{
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":           `common_tls_context sni`,
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext":             `tls_certificates alpn_protocols tls_params validation_context`,
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate":               `certificate_chain private_key`,
	"envoy.extensions.transport_sockets.tls.v3.TlsParameters":                `tls_minimum_protocol_version tls_maximum_protocol_version`,
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": `trusted_ca`,
	"envoy.config.core.v3.DataSource":                                        `filename inline_bytes inline_string`,
})

type upstream struct {
	cfg  *gotls.Config
	alpn bool // the config names ALPN protocols
}

func buildUpstream(m *tlsv3.UpstreamTlsContext) (*upstream, error) {
	if err := supportedUpstream.Check(m); err != nil {
		return nil, err
	}
	ctx := m.GetCommonTlsContext()
	cfg, err := commonConfig(ctx)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = m.GetSni()
	// crypto/tls checks names only with ServerName and no
	// InsecureSkipVerify; Envoy checks the chain alone: verify it here.
	cfg.InsecureSkipVerify = true
	if vc := ctx.GetValidationContext(); vc != nil {
		pool, err := loadPool(vc.GetTrustedCa())
		if err != nil {
			return nil, config.At("common_tls_context.validation_context.trusted_ca", err)
		}
		cfg.VerifyConnection = func(cs gotls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: upstream sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		}
	}
	return &upstream{cfg: cfg, alpn: len(cfg.NextProtos) > 0}, nil
}

// Client implements transport.Upstream.
func (u *upstream) Client(ctx context.Context, nc net.Conn, hostname string, alpn []string) (net.Conn, error) {
	cfg := u.cfg
	if !u.alpn && len(alpn) > 0 {
		cfg = cfg.Clone()
		cfg.NextProtos = alpn
	}
	c := gotls.Client(nc, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return c, nil
}
