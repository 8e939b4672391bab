// Package metadataexchange is Istio's TCP metadata exchange on accepted
// connections: the network filter "istio.metadata_exchange"
// (envoy.tcp.metadataexchange.config.MetadataExchange in a TypedStruct)
// that pilot puts first in a sidecar's inbound filter chains. The other
// end is the cluster filter of the same name
// (filter/upstream/metadataexchange); internal/istiomd has the preamble.
//
// On a connection whose TLS negotiated the configured ALPN protocol
// (istio-peer-exchange), the filter takes the peer's preamble off the
// front of the stream and answers with this proxy's, then passes the
// rest to the filters after it untouched (nothing in Strait reads the
// peer's identity yet: Istio's TCP stats would). On any other connection
// it does nothing. Stats: metadata_exchange.alpn_protocol_found,
// alpn_protocol_not_found, metadata_added, initial_header_not_found (the
// bytes do not start with a preamble: they pass on as they are),
// header_not_found (the metadata does not decode, or is larger than 64
// KiB: the connection closes). enable_discovery looks peers up in Istio's
// workload discovery, which Strait does not have: it finds nothing, as in
// Envoy without it.
package metadataexchange

import (
	"errors"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/istiomd"
	"github.com/straitproxy/strait/network"
	"google.golang.org/protobuf/proto"
)

// Name is the name pilot gives the filter; TypeURL its config's type.
const (
	Name    = "istio.metadata_exchange"
	TypeURL = "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"
)

func init() {
	filter.RegisterNetworkStruct(Name, TypeURL, func(bc *filter.BuildContext, m proto.Message) (filter.NetworkFactory, error) {
		return build(bc, m)
	})
}

type factory struct{ *istiomd.Exchange }

func build(bc *filter.BuildContext, m proto.Message) (*factory, error) {
	sc := bc.Stats.Scope("metadata_exchange", "", "")
	x, err := istiomd.NewExchange(func(v any) error { return config.DecodeTyped(m, v) }, bc.Node,
		func(n string) istiomd.Counter { return sc.Counter(n) })
	if err != nil {
		return nil, err
	}
	return &factory{x}, nil
}

// Terminal implements filter.NetworkFactory.
func (*factory) Terminal() bool { return false }

// NewHandler implements filter.NetworkFactory.
func (f *factory) NewHandler(c *network.Conn, next network.Handler) (network.Handler, error) {
	return &handler{f: f, c: c, next: next}, nil
}

// The states of a connection's exchange.
const (
	undecided = iota // nothing read yet: the ALPN is not known
	reading          // reading the peer's preamble
	passing          // done (or not an exchange): bytes go on
)

type handler struct {
	f     *factory
	c     *network.Conn
	next  network.Handler
	state int
}

// OnStart passes the connection's start on to the filters after it.
func (h *handler) OnStart() { network.Start(h.next) }

// OnRead implements network.Handler.
func (h *handler) OnRead(data []byte) int {
	if h.state == undecided {
		// The first bytes come after the TLS handshake: its ALPN is known.
		h.state = passing
		if cs, ok := h.c.TLSState(); ok && cs.NegotiatedProtocol == h.f.Protocol {
			h.f.Found.Inc()
			h.state = reading
		} else {
			h.f.NotFound.Inc()
		}
	}
	if h.state == passing {
		return h.next.OnRead(data)
	}
	n, _, bad, err := istiomd.ParsePreamble(data)
	switch {
	case errors.Is(err, istiomd.ErrNoMagic):
		h.f.NoMagic.Inc()
		h.state = passing
		return h.next.OnRead(data)
	case err != nil:
		h.f.NoHeader.Inc()
		h.c.Close()
		return len(data)
	case n == 0:
		return 0 // more to come
	}
	if bad {
		h.f.NoHeader.Inc()
	}
	h.state = passing
	if _, err := h.c.Write(h.f.Preamble); err != nil {
		h.c.Close()
		return len(data)
	}
	h.f.Added.Inc()
	if n == len(data) {
		return n
	}
	return n + h.next.OnRead(data[n:])
}

// OnEOF implements network.Handler.
func (h *handler) OnEOF() { h.next.OnEOF() }

// OnClose implements network.Handler.
func (h *handler) OnClose(err error) { h.next.OnClose(err) }

// Drain passes a drain on to the filters after it (an HTTP connection
// manager behind this filter closes when its request is answered).
func (h *handler) Drain() {
	if d, ok := h.next.(interface{ Drain() }); ok {
		d.Drain()
	}
}
