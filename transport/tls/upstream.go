package tls

import (
	"context"
	gotls "crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
)

// Upstream TLS (UpstreamTlsContext), as Envoy has it: without a
// validation context the upstream's certificate is not verified; with
// one, its chain, SANs, pins and CRLs are checked as configured (names
// only by SAN matchers or auto_sni_san_validation, never by sni alone).

func init() {
	transport.RegisterUpstream(Name, &tlsv3.UpstreamTlsContext{}, func(bc *transport.BuildContext, m proto.Message) (transport.Upstream, error) {
		return buildUpstream(bc, m.(*tlsv3.UpstreamTlsContext))
	})
}

var supportedUpstream = support(map[string]string{
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": `common_tls_context sni auto_host_sni
		auto_sni_san_validation max_session_keys`,
})

// upstream is a built UpstreamTlsContext.
type upstream struct {
	cur      atomic.Pointer[upstreamState] // nil until its secrets came
	sc       *secretContext
	cache    gotls.ClientSessionCache
	autoHost bool // auto_host_sni
	autoSAN  bool // auto_sni_san_validation
	stats    *sslStats
}

// upstreamState is one version of the context (its secrets change it).
type upstreamState struct {
	cfg  *gotls.Config
	val  *validator
	c    *common // what it was built from (for /certs)
	alpn bool    // the config names ALPN protocols
}

func buildUpstream(bc *transport.BuildContext, m *tlsv3.UpstreamTlsContext) (*upstream, error) {
	if err := supportedUpstream.Check(m); err != nil {
		return nil, err
	}
	u := &upstream{autoHost: m.GetAutoHostSni(), autoSAN: m.GetAutoSniSanValidation(), stats: newSSLStats(bc.Stats)}
	ctx := m.GetCommonTlsContext()
	if u.autoSAN && ctx.GetValidationContext().GetTrustedCa() == nil && ctx.GetValidationContext().GetSystemRootCerts() == nil &&
		ctx.GetValidationContextSdsSecretConfig() == nil && ctx.GetCombinedValidationContext() == nil {
		return nil, config.At("auto_sni_san_validation", errors.New("checking names without a trusted CA would accept any self-signed certificate: give a validation context with trusted_ca"))
	}
	// Envoy keeps max_session_keys (default 1) sessions to resume.
	if n := m.GetMaxSessionKeys(); n == nil || n.GetValue() > 0 {
		u.cache = gotls.NewLRUClientSessionCache(max(1, int(n.GetValue())))
	}
	sc, err := buildContext(bc, m.GetCommonTlsContext(), func(c *common) error {
		cfg := c.cfg
		cfg.ServerName = m.GetSni()
		// crypto/tls checks names only with ServerName and no
		// InsecureSkipVerify; Envoy checks what the validation context
		// says.
		cfg.InsecureSkipVerify = true
		cfg.ClientSessionCache = u.cache
		u.cur.Store(&upstreamState{cfg: cfg, val: c.val, c: c, alpn: len(cfg.NextProtos) > 0})
		return nil
	})
	if err != nil {
		return nil, err
	}
	u.sc = sc
	return u, nil
}

// Ready implements transport.Waiter.
func (u *upstream) Ready() bool { return u.cur.Load() != nil }

// FetchTimeout implements transport.FetchWaiter.
func (u *upstream) FetchTimeout() time.Duration { return u.sc.waits.timeout() }

// Certificates implements transport.CertReporter.
func (u *upstream) Certificates(now time.Time) *adminv3.Certificate {
	if st := u.cur.Load(); st != nil {
		return st.c.report(now)
	}
	return nil
}

// Client implements transport.Upstream.
func (u *upstream) Client(ctx context.Context, nc net.Conn, hostname string, alpn transport.ALPN) (net.Conn, error) {
	st := u.cur.Load()
	if st == nil {
		return nil, errors.New("the TLS context is waiting for its secrets")
	}
	cfg := st.cfg.Clone() // shares the session cache
	switch {
	case len(alpn.Override) > 0:
		cfg.NextProtos = alpn.Override
	case !st.alpn && len(alpn.Default) > 0:
		cfg.NextProtos = alpn.Default
	}
	if u.autoHost && hostname != "" {
		cfg.ServerName = hostname
	}
	if v := st.val; v != nil || u.autoSAN {
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
	err := c.HandshakeContext(ctx)
	u.stats.done(c.ConnectionState(), err)
	if err != nil {
		return nil, err
	}
	return c, nil
}
