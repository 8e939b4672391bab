// Package tls is envoy.transport_sockets.tls for accepted connections
// (DownstreamTlsContext), on Go's crypto/tls unmodified.
//
// It terminates TLS on listeners under the netpoll I/O model and
// originates it for clusters (upstream.go); README.md lists the fields.
// Every field not implemented is refused with its path.
package tls

import (
	"crypto/sha256"
	gotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
)

// Name is the transport socket's name.
const Name = "envoy.transport_sockets.tls"

// defaultHandshakeTimeout bounds a handshake when the filter chain sets
// no transport_socket_connect_timeout (Envoy has none by default; a
// client that never finishes would hold the connection for ever).
const defaultHandshakeTimeout = 10 * time.Second

func init() {
	transport.Register(Name, &tlsv3.DownstreamTlsContext{}, func(bc *transport.BuildContext, m proto.Message) (transport.Downstream, error) {
		return build(bc, m.(*tlsv3.DownstreamTlsContext))
	})
}

var supported = support(map[string]string{
	"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": `common_tls_context require_client_certificate
		require_sni session_ticket_keys session_ticket_keys_sds_secret_config disable_stateless_session_resumption
		disable_stateful_session_resumption`,
	"envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys": `keys`,
})

// downstream is a built DownstreamTlsContext: the configuration new
// handshakes use, replaced when its secrets change.
type downstream struct {
	cur   atomic.Pointer[gotls.Config]
	built atomic.Pointer[common] // the version cur was made from (for /certs)
	// certs are cur's certificates (XFCC's By reads the one presented).
	certs atomic.Pointer[[]gotls.Certificate]
	sc    *secretContext
	// handshake bounds each handshake.
	handshake time.Duration
	stats     *sslStats

	mu        sync.Mutex
	base      *gotls.Config       // the last built configuration, without ticket keys
	baseFrom  *common             // what base was built from
	baseCerts []gotls.Certificate // base's certificates
	keys      *[][32]byte         // session ticket keys (nil: crypto/tls's own)
	keysSDS   bool                // the keys come from a secret: wait for them
}

func build(bc *transport.BuildContext, m *tlsv3.DownstreamTlsContext) (*downstream, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	ctx := m.GetCommonTlsContext()
	if len(ctx.GetTlsCertificates()) == 0 && len(ctx.GetTlsCertificateSdsSecretConfigs()) == 0 {
		return nil, config.At("common_tls_context.tls_certificates", errors.New("at least one certificate (or tls_certificate_sds_secret_configs) is required"))
	}
	hasVC := ctx.GetValidationContext() != nil || ctx.GetValidationContextSdsSecretConfig() != nil || ctx.GetCombinedValidationContext() != nil
	if m.GetRequireClientCertificate().GetValue() && !hasVC {
		return nil, config.At("require_client_certificate", errors.New("needs a validation context"))
	}
	d := &downstream{handshake: defaultHandshakeTimeout, stats: newSSLStats(bc.Stats)}
	if bc.HandshakeTimeout > 0 {
		d.handshake = bc.HandshakeTimeout
	}
	if tk := m.GetSessionTicketKeys(); tk != nil {
		keys, err := ticketKeys(tk.GetKeys())
		if err != nil {
			return nil, config.At("session_ticket_keys", err)
		}
		d.keys = &keys
	}
	sc, err := buildContext(bc, ctx, func(c *common) error {
		d.mu.Lock()
		d.baseCerts = c.cfg.Certificates // before finishDownstream may move them into GetCertificate
		d.base, d.baseFrom = finishDownstream(m, c), c
		d.publishLocked()
		d.mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.sc = sc
	if ref := m.GetSessionTicketKeysSdsSecretConfig(); ref != nil {
		if err := d.watchTicketKeys(bc, ref); err != nil {
			return nil, config.At("session_ticket_keys_sds_secret_config", err)
		}
	}
	return d, nil
}

// publishLocked makes new handshakes use the built configuration with the
// current ticket keys, once both are there (mu held).
func (d *downstream) publishLocked() {
	if d.base == nil || d.keysSDS && d.keys == nil {
		return
	}
	cfg := d.base
	if d.keys != nil {
		cfg = d.base.Clone()
		cfg.SetSessionTicketKeys(*d.keys)
	}
	d.cur.Store(cfg)
	d.built.Store(d.baseFrom)
	certs := d.baseCerts // a header of its own: baseCerts is rewritten by the next version while handshakes read this one
	d.certs.Store(&certs)
}

// watchTicketKeys takes the ticket keys from a secret (static or SDS):
// rotating them (a new first key; the old ones kept to open the tickets
// already out) needs no listener update.
func (d *downstream) watchTicketKeys(bc *transport.BuildContext, ref *tlsv3.SdsSecretConfig) error {
	if bc.Secrets == nil {
		return errors.New("no secret store")
	}
	d.keysSDS = true
	d.sc.waits.add(ref)
	cancel, err := watchWeak(bc.Secrets, ref, d, func(d *downstream, s *tlsv3.Secret) error {
		defer d.sc.waits.arrived(ref)
		tk := s.GetSessionTicketKeys()
		if tk == nil {
			return errors.New("not a session_ticket_keys secret")
		}
		keys, err := ticketKeys(tk.GetKeys())
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.keys = &keys
		d.publishLocked()
		d.mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	runtime.AddCleanup(d, func(f func()) { f() }, cancel)
	return nil
}

// Ready implements transport.Waiter.
func (d *downstream) Ready() bool { return d.cur.Load() != nil }

// FetchTimeout implements transport.FetchWaiter.
func (d *downstream) FetchTimeout() time.Duration { return d.sc.waits.timeout() }

// Certificates implements transport.CertReporter.
func (d *downstream) Certificates(now time.Time) *adminv3.Certificate {
	if c := d.built.Load(); c != nil {
		return c.report(now)
	}
	return nil
}

// finishDownstream completes a server configuration from the context's
// options.
func finishDownstream(m *tlsv3.DownstreamTlsContext, c *common) *gotls.Config {
	cfg := c.cfg
	if certs := cfg.Certificates; len(certs) > 1 {
		// Several certificates: the first the client's SNI names and its
		// algorithms can verify; else the first it can verify; else the
		// first.
		cfg.Certificates = nil
		cfg.GetCertificate = func(h *gotls.ClientHelloInfo) (*gotls.Certificate, error) {
			for i := range certs {
				if h.SupportsCertificate(&certs[i]) == nil {
					return &certs[i], nil
				}
			}
			anyName := *h
			anyName.ServerName = ""
			for i := range certs {
				if anyName.SupportsCertificate(&certs[i]) == nil {
					return &certs[i], nil
				}
			}
			return &certs[0], nil
		}
	}
	if v := c.val; v != nil {
		// Client certificates are asked for and checked by the
		// validation context (crypto/tls's own check knows no SAN
		// matchers, pins or CRLs); the CA list tells clients which
		// certificate to send.
		cfg.ClientAuth = gotls.RequestClientCert
		if !v.suppressCAList {
			cfg.ClientCAs = v.roots
		}
		cfg.VerifyConnection = func(cs gotls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			return v.verify(cs.PeerCertificates, "")
		}
		if m.GetRequireClientCertificate().GetValue() {
			cfg.ClientAuth = gotls.RequireAnyClientCert
		}
	}
	if m.GetRequireSni().GetValue() {
		cfg.GetConfigForClient = func(h *gotls.ClientHelloInfo) (*gotls.Config, error) {
			if h.ServerName == "" {
				return nil, errors.New("tls: the client sent no SNI (require_sni)")
			}
			return nil, nil
		}
	}
	if m.GetDisableStatelessSessionResumption() {
		cfg.SessionTicketsDisabled = true
	}
	return cfg
}

// ticketKeys derives crypto/tls's 32-byte ticket keys from Envoy's
// 80-byte ones (the first key issues tickets, all of them open tickets;
// tickets are not interchangeable with Envoy's).
func ticketKeys(ds []*corev3.DataSource) ([][32]byte, error) {
	if len(ds) == 0 {
		return nil, errors.New("keys: at least one")
	}
	var keys [][32]byte
	for i, d := range ds {
		b, err := readSource(d)
		if err != nil {
			return nil, config.At(fmt.Sprintf("keys[%d]", i), err)
		}
		if len(b) != 80 {
			return nil, config.At(fmt.Sprintf("keys[%d]", i), fmt.Errorf("%d bytes, want 80", len(b)))
		}
		keys = append(keys, sha256.Sum256(b))
	}
	return keys, nil
}

// Wrap implements transport.Downstream: a server-side TLS connection over
// s, which must be a blocking net.Conn (netpoll).
func (d *downstream) Wrap(s network.Socket) (network.Socket, error) {
	nc, ok := s.(net.Conn)
	if !ok {
		return nil, errors.New("TLS needs the netpoll I/O model")
	}
	cfg := d.cur.Load()
	if cfg == nil {
		return nil, errors.New("the TLS context is waiting for its secrets")
	}
	return transport.NewBlocking(d.server(nc, cfg), s, d.handshake, d.done), nil
}

// serverConn is a TLS server connection that can tell which of its
// context's certificates it presented (XFCC's By).
type serverConn struct {
	*gotls.Conn
	certs []gotls.Certificate
}

func (d *downstream) server(nc net.Conn, cfg *gotls.Config) *serverConn {
	sc := &serverConn{Conn: gotls.Server(nc, cfg)}
	if p := d.certs.Load(); p != nil {
		sc.certs = *p
	}
	return sc
}

// LocalCertificate is the leaf this side presented: the context's one
// certificate, or of several the first whose names cover the client's
// SNI (as the handshake chose, but for a client that could verify only
// another of them), else the first.
func (s *serverConn) LocalCertificate() *x509.Certificate {
	if len(s.certs) == 0 {
		return nil
	}
	if sni := s.ConnectionState().ServerName; sni != "" && len(s.certs) > 1 {
		for _, c := range s.certs {
			if c.Leaf != nil && c.Leaf.VerifyHostname(sni) == nil {
				return c.Leaf
			}
		}
	}
	return s.certs[0].Leaf
}

// done counts a handshake's outcome.
func (d *downstream) done(s transport.Session, err error) { d.stats.done(s.ConnectionState(), err) }

// Transport implements transport.NonBlocking: TLS under epoll.
func (d *downstream) Transport(c *network.Conn) (transport.Socket, error) {
	cfg := d.cur.Load()
	if cfg == nil {
		return nil, errors.New("the TLS context is waiting for its secrets")
	}
	return transport.NewNonBlocking(c, d.handshake,
		func(nc net.Conn) transport.Session { return d.server(nc, cfg) }, d.done), nil
}
