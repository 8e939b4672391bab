package upstream

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// ALPN overrides: a request may ask that its TLS connection offer other
// ALPN protocols than the cluster's (Envoy's application protocols filter
// state, which Istio's ALPN filter sets). Connections made so are pooled
// apart, by the list, so that one is only ever lent to requests that
// asked for what it offered. The lists come from configuration, so the
// pools a host keeps are few.

// altPools are a host's pools for one ALPN override.
type altPools struct {
	pool *Pool
	mux  *MuxPool
}

// PoolsFor returns h's pools for requests whose connections offer alpn:
// the host's own when alpn is empty or the host has no TLS (nothing
// to negotiate). A host that left its cluster gets closed pools.
func (h *Host) PoolsFor(alpn []string) (*Pool, *MuxPool) {
	if len(alpn) == 0 || h.sock.socket == nil {
		return h.pool, h.mux
	}
	key := strings.Join(alpn, "\x00")
	h.muxMu.Lock()
	defer h.muxMu.Unlock()
	if a := h.alts[key]; a != nil {
		return a.pool, a.mux
	}
	a := &altPools{pool: &Pool{host: h, override: alpn}}
	if h.mux != nil {
		a.mux = newMuxPool(h, h.mux.codec, h.mux.opts, h.mux.alpn)
		a.mux.override = alpn
		a.pool.altMux = a.mux
	}
	if h.removed.Load() {
		a.pool.Close()
		if a.mux != nil {
			a.mux.Close()
		}
		return a.pool, a.mux
	}
	if h.alts == nil {
		h.alts = map[string]*altPools{}
	}
	h.alts[key] = a
	return a.pool, a.mux
}

// UpstreamProtocol is the HTTP version the cluster speaks for a request
// that came in as downstream ("HTTP/1.0", "HTTP/1.1", "HTTP/2"): the
// downstream's with use_downstream_protocol_config, HTTP/2 first with
// auto_config, else what it is configured for (Envoy's
// upstreamHttpProtocol, first choice).
func (c *Cluster) UpstreamProtocol(downstream string) string {
	switch {
	case c.Downstream:
		return downstream
	case c.Auto:
		return "HTTP/2"
	case c.Codec != nil && c.Codec.NewMux != nil:
		return "HTTP/2"
	}
	return "HTTP/1.1"
}

// Metadata is the cluster's metadata (filters read their keys: Istio's
// istio.alpn_override).
func (c *Cluster) Metadata() *corev3.Metadata { return c.metadata }

// Pool is the pool c came from, where it goes back.
func (c *Conn) Pool() *Pool { return c.pool }
