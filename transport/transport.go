// Package transport is the transport-socket seam: what sits between a
// connection's socket and its network filters (TLS, TLCP; raw_buffer is
// none). A transport socket is an extension registered by the type URL
// of its config, from its own folder, and built per filter chain.
//
// This first slice wraps the socket of an accepted connection before the
// I/O model starts it; the socket it returns is read and written by the
// model as any socket. That works under netpoll, whose reader may block;
// under epoll a wrapped socket would block a poller, so a transport that
// needs a blocking socket is refused there (docs/design/transport-sockets.md
// has the plan that lifts this).
package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Downstream is a built transport socket for accepted connections,
// shared by every connection of its filter chain.
type Downstream interface {
	// Wrap returns the socket the connection reads and writes through
	// instead of s. The handshake, if any, happens on the first read.
	Wrap(s network.Socket) (network.Socket, error)
}

// Socket is a transport socket running as a connection's
// network.Transport: the I/O model reads the socket and hands it the
// bytes; it hands the plaintext to its inner handler.
type Socket interface {
	network.Transport
	SetInner(h network.Handler)
}

// NonBlocking is a Downstream that also runs under an I/O model whose
// socket it cannot wrap (epoll: its readers read the descriptor and must
// never block).
type NonBlocking interface {
	Transport(c *network.Conn) (Socket, error)
}

// Install puts d on an accepted connection before its filters are
// attached: a wrapped socket where the socket is a blocking net.Conn
// (netpoll), else a transport socket (epoll). It returns the transport
// socket, whose SetInner the caller calls with the filters' handler (nil
// when the socket was wrapped).
func Install(d Downstream, c *network.Conn) (Socket, error) {
	c.MarkSecure()
	if _, blocking := c.Socket().(net.Conn); blocking {
		return nil, c.WrapSocket(d.Wrap)
	}
	nb, ok := d.(NonBlocking)
	if !ok {
		return nil, fmt.Errorf("this transport socket cannot run under this I/O model")
	}
	s, err := nb.Transport(c)
	if err != nil {
		return nil, err
	}
	c.SetTransport(s)
	return s, nil
}

// CertReporter is a transport socket (downstream or upstream) that lists
// its certificates for the admin's /certs: its trusted CAs and the leaf
// of each of its own chains, as loaded now (nil before its secrets came).
type CertReporter interface {
	Certificates(now time.Time) *adminv3.Certificate
}

// AppendCertificates appends the /certs entry of socket (a Downstream or
// Upstream, nil for raw_buffer) when it reports one.
func AppendCertificates(out []*adminv3.Certificate, socket any, now time.Time) []*adminv3.Certificate {
	if r, ok := socket.(CertReporter); ok {
		if c := r.Certificates(now); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// BuildContext is what a transport socket's builder may use.
type BuildContext struct {
	Log *slog.Logger
	// Secrets delivers secrets by name (nil: none configured).
	Secrets SecretSource
	// Stats is the listener's or the cluster's scope (its ssl.* stats).
	Stats *stats.Scope
	// HandshakeTimeout bounds an accepted connection's handshake (a
	// filter chain's transport_socket_connect_timeout; 0: the socket's
	// default).
	HandshakeTimeout time.Duration
}

// SecretSource delivers TLS secrets by name (tlsconfig.Secrets).
type SecretSource interface {
	// Watch calls fn with the secret named name now if it is known, and
	// again at each change, until cancel. sds nil names a static secret
	// (static_resources.secrets), which must exist; otherwise it comes by
	// SDS from sds. The secret's files are read in. fn's error refuses
	// that version.
	Watch(name string, sds *corev3.ConfigSource, fn func(*tlsv3.Secret) error) (cancel func(), err error)
}

// Waiter is a transport socket that may be waiting for its secrets:
// a listener warms until Ready.
type Waiter interface {
	Ready() bool
}

// FetchWaiter is a Waiter whose secrets come from config sources (SDS):
// how long a listener or cluster waits for them, the longest
// initial_fetch_timeout among its sources (Envoy's 15 s for a source
// that gives none); 0 waits for ever, as a source's 0 says.
type FetchWaiter interface {
	Waiter
	FetchTimeout() time.Duration
}

// DefaultFetchTimeout is Envoy's initial_fetch_timeout default.
const DefaultFetchTimeout = 15 * time.Second

// SecretsWait is how long a listener or cluster waits for the secrets of
// sockets (transport sockets, nil ones raw_buffer): the longest wait of
// those not ready, 0 (for ever) when any of them waits for ever. waiting
// is false when none is waiting.
func SecretsWait(sockets ...any) (d time.Duration, waiting bool) {
	for _, s := range sockets {
		w, ok := s.(Waiter)
		if !ok || w.Ready() {
			continue
		}
		t := DefaultFetchTimeout
		if fw, ok := s.(FetchWaiter); ok {
			t = fw.FetchTimeout()
		}
		if t == 0 {
			return 0, true
		}
		d, waiting = max(d, t), true
	}
	return d, waiting
}

// Builder builds a downstream transport socket from its decoded,
// validated config.
type Builder func(bc *BuildContext, cfg proto.Message) (Downstream, error)

// Register registers a downstream transport socket by name and config type.
func Register(name string, cfg proto.Message, b Builder) {
	config.Register(config.Extension{Kind: config.DownstreamTransport, Name: name,
		TypeURL: "type.googleapis.com/" + string(cfg.ProtoReflect().Descriptor().FullName()), Factory: b})
}

// RegisterStruct registers a downstream transport socket whose config
// has no proto: it comes as a TypedStruct (xds.type.v3 or udpa.type.v1)
// naming typeURL, and b gets its *structpb.Struct value
// (config.DecodeStruct decodes it).
func RegisterStruct(name, typeURL string, b Builder) {
	config.Register(config.Extension{Kind: config.DownstreamTransport, Name: name, TypeURL: typeURL, Factory: b})
}

// RegisterUpstreamStruct is RegisterStruct for clusters.
func RegisterUpstreamStruct(name, typeURL string, b UpstreamBuilder) {
	config.Register(config.Extension{Kind: config.UpstreamTransport, Name: name, TypeURL: typeURL, Factory: b})
}

// Upstream is a built transport socket for a cluster's connections.
type Upstream interface {
	// Client runs the client side over nc, a connection just made to the
	// host named hostname ("" when unknown; for auto_host_sni), offering
	// the ALPN protocols alpn says; the handshake is bounded by ctx.
	Client(ctx context.Context, nc net.Conn, hostname string, alpn ALPN) (net.Conn, error)
}

// ALPN is what an upstream connection offers: Override when set (a
// request's filter state asked for it: Envoy's application protocols
// override, which Istio's ALPN filter sets), else the config's own
// protocols, else Default (what the cluster's codec speaks).
type ALPN struct {
	Default, Override []string
}

// UpstreamBuilder builds an upstream transport socket from its decoded,
// validated config.
type UpstreamBuilder func(bc *BuildContext, cfg proto.Message) (Upstream, error)

// RegisterUpstream registers an upstream transport socket.
func RegisterUpstream(name string, cfg proto.Message, b UpstreamBuilder) {
	config.Register(config.Extension{Kind: config.UpstreamTransport, Name: name,
		TypeURL: "type.googleapis.com/" + string(cfg.ProtoReflect().Descriptor().FullName()), Factory: b})
}

// RawBufferName is the plain transport socket: bytes as they are.
const RawBufferName = "envoy.transport_sockets.raw_buffer"

func init() {
	Register(RawBufferName, &rawbufferv3.RawBuffer{}, func(*BuildContext, proto.Message) (Downstream, error) { return nil, nil })
	RegisterUpstream(RawBufferName, &rawbufferv3.RawBuffer{}, func(*BuildContext, proto.Message) (Upstream, error) { return nil, nil })
}

// Build builds a filter chain's transport_socket; nil (and no error) is
// raw_buffer, the connection's own socket.
func Build(bc *BuildContext, ts *corev3.TransportSocket) (Downstream, error) {
	ext, msg, err := decode(config.DownstreamTransport, ts)
	if ext == nil || err != nil {
		return nil, err
	}
	d, err := ext.Factory.(Builder)(bc, msg)
	return d, config.At("typed_config", err)
}

// BuildUpstream builds a cluster's transport_socket; nil is raw_buffer.
func BuildUpstream(bc *BuildContext, ts *corev3.TransportSocket) (Upstream, error) {
	ext, msg, err := decode(config.UpstreamTransport, ts)
	if ext == nil || err != nil {
		return nil, err
	}
	u, err := ext.Factory.(UpstreamBuilder)(bc, msg)
	return u, config.At("typed_config", err)
}

// decode looks a transport socket's config up in kind k; a nil extension
// with no error is raw_buffer given by name alone.
func decode(k config.Kind, ts *corev3.TransportSocket) (*config.Extension, proto.Message, error) {
	if ts == nil {
		return nil, nil, nil
	}
	typed := ts.GetTypedConfig()
	if typed == nil {
		if ts.GetName() == RawBufferName || ts.GetName() == "raw_buffer" {
			return nil, nil, nil
		}
		return nil, nil, config.At("typed_config", fmt.Errorf("required"))
	}
	return config.Decode(k, typed)
}
