// Package metadataexchange is Istio's TCP metadata exchange on a cluster's
// connections (a cluster's filters: "istio.metadata_exchange" with
// envoy.tcp.metadataexchange.config.MetadataExchange in a TypedStruct, as
// Istio's pilot puts on outbound clusters).
//
// When a connection's TLS negotiated the configured ALPN protocol
// (istio-peer-exchange), both ends send, before any other byte, a preamble:
// the magic 0x3D230467 and a length (4 bytes each, big-endian), then a
// serialized google.protobuf.Any holding a Struct with this workload's
// identity under "x-envoy-peer-metadata" and its node id under
// "x-envoy-peer-metadata-id". The filter writes its own at once and takes
// the peer's off the front of what it reads; the rest passes untouched.
// Stats, under the cluster: metadata_exchange.alpn_protocol_found,
// alpn_protocol_not_found (any other ALPN: the connection is left as it
// is), metadata_added, initial_header_not_found (the peer's bytes do not
// start with the magic: they pass through as they are), header_not_found
// (the peer's metadata does not decode). enable_discovery looks peers up
// in Istio's workload discovery extension, which Strait does not have: it
// finds nothing, as in Envoy without it.
package metadataexchange

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/istiomd"
	"github.com/straitproxy/strait/upstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Name is the name pilot gives the filter; TypeURL its config's type.
const (
	Name    = "istio.metadata_exchange"
	TypeURL = "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"
)

func init() {
	upstream.RegisterConnFilter(Name, TypeURL, build)
}

type mx struct{ *istiomd.Exchange }

func build(env upstream.ConnFilterEnv, m proto.Message) (upstream.ConnFilter, error) {
	sc := env.Stats.Scope("metadata_exchange", "", "")
	x, err := istiomd.NewExchange(func(v any) error { return config.DecodeTyped(m, v) }, env.Node,
		func(n string) istiomd.Counter { return sc.Counter(n) })
	if err != nil {
		return nil, err
	}
	return &mx{x}, nil
}

// Connected implements upstream.ConnFilter.
func (f *mx) Connected(_ *upstream.Host, c net.Conn) (net.Conn, error) {
	st, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok || st.ConnectionState().NegotiatedProtocol != f.Protocol {
		f.NotFound.Inc()
		return c, nil
	}
	f.Found.Inc()
	if _, err := c.Write(f.Preamble); err != nil {
		return nil, fmt.Errorf("metadata exchange: %w", err)
	}
	f.Added.Inc()
	return &conn{Conn: c, f: f}, nil
}

// conn takes the peer's preamble off the front of what it reads.
type conn struct {
	net.Conn
	f *mx

	mu      sync.Mutex
	done    bool
	pending []byte // read past the preamble, not handed out yet
	// Peer is the peer's identity, once read (nil when it sent none).
	Peer *structpb.Struct
}

// ConnectionState is the TLS state under the exchange.
func (c *conn) ConnectionState() tls.ConnectionState {
	return c.Conn.(interface{ ConnectionState() tls.ConnectionState }).ConnectionState()
}

// NetConn is the socket under the TLS connection (the pool's liveness
// probe looks at it).
func (c *conn) NetConn() net.Conn {
	if nc, ok := c.Conn.(interface{ NetConn() net.Conn }); ok {
		return nc.NetConn()
	}
	return c.Conn
}

func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		if err := c.readPreamble(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// readPreamble reads until the peer's preamble is whole (or shown not to
// be one); c.mu is held.
func (c *conn) readPreamble() error {
	buf := make([]byte, 0, 512)
	for {
		n, peer, bad, err := istiomd.ParsePreamble(buf)
		switch {
		case errors.Is(err, istiomd.ErrNoMagic):
			c.f.NoMagic.Inc()
			c.done, c.pending = true, buf // not an exchange: pass it on
			return nil
		case err != nil:
			c.f.NoHeader.Inc()
			c.done = true
			return err
		case n > 0:
			if bad {
				c.f.NoHeader.Inc()
			}
			c.Peer = peer
			c.done, c.pending = true, buf[n:]
			return nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		k, err := c.Conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err != nil {
			// The peer ended before its preamble: what came passes on.
			c.done, c.pending = true, buf
			if len(buf) > 0 {
				return nil
			}
			return err
		}
	}
}
