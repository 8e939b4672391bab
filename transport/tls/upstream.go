package tls

import (
	"context"
	gotls "crypto/tls"
	"net"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
)

// Upstream TLS (UpstreamTlsContext), as Envoy has it: without a
// validation context the upstream's certificate is not verified; with
// one, its chain, SANs, pins and CRLs are checked as configured (names
// only by SAN matchers or auto_sni_san_validation, never by sni alone).

func init() {
	transport.RegisterUpstream(Name, &tlsv3.UpstreamTlsContext{}, func(_ *transport.BuildContext, m proto.Message) (transport.Upstream, error) {
		return buildUpstream(m.(*tlsv3.UpstreamTlsContext))
	})
}

var supportedUpstream = support(map[string]string{
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": `common_tls_context sni auto_host_sni
		auto_sni_san_validation max_session_keys`,
})

type upstream struct {
	cfg      *gotls.Config
	val      *validator
	alpn     bool // the config names ALPN protocols
	autoHost bool // auto_host_sni
	autoSAN  bool // auto_sni_san_validation
}

func buildUpstream(m *tlsv3.UpstreamTlsContext) (*upstream, error) {
	if err := supportedUpstream.Check(m); err != nil {
		return nil, err
	}
	c, err := buildCommon(m.GetCommonTlsContext())
	if err != nil {
		return nil, err
	}
	cfg := c.cfg
	cfg.ServerName = m.GetSni()
	// crypto/tls checks names only with ServerName and no
	// InsecureSkipVerify; Envoy checks what the validation context says.
	cfg.InsecureSkipVerify = true
	// Envoy keeps max_session_keys (default 1) sessions to resume.
	if n := 1; m.GetMaxSessionKeys() == nil || m.GetMaxSessionKeys().GetValue() > 0 {
		if m.GetMaxSessionKeys() != nil {
			n = int(m.GetMaxSessionKeys().GetValue())
		}
		cfg.ClientSessionCache = gotls.NewLRUClientSessionCache(n)
	}
	u := &upstream{cfg: cfg, val: c.val, alpn: len(cfg.NextProtos) > 0,
		autoHost: m.GetAutoHostSni(), autoSAN: m.GetAutoSniSanValidation()}
	return u, nil
}

// Client implements transport.Upstream.
func (u *upstream) Client(ctx context.Context, nc net.Conn, hostname string, alpn []string) (net.Conn, error) {
	cfg := u.cfg.Clone() // shares the session cache
	if !u.alpn && len(alpn) > 0 {
		cfg.NextProtos = alpn
	}
	if u.autoHost && hostname != "" {
		cfg.ServerName = hostname
	}
	if v := u.val; v != nil || u.autoSAN {
		autoSAN := ""
		if u.autoSAN {
			autoSAN = cfg.ServerName
		}
		cfg.VerifyConnection = func(cs gotls.ConnectionState) error {
			if v == nil {
				v = &validator{}
			}
			return v.verify(cs.PeerCertificates, autoSAN)
		}
	}
	c := gotls.Client(nc, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return c, nil
}
