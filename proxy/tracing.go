package proxy

import (
	"math/rand/v2"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/protocol"
)

// The connection manager's tracing decision without a tracer (Envoy's
// tracing block with no provider): every request is classified as Envoy
// classifies it, the reason is packed into its x-request-id (so the next
// hop, and a tracer behind it, sees the same decision) and counted in
// http.<prefix>.tracing.*. No span exists without a provider.

// Tracing is the connection manager's tracing block: the three sampling
// fractions, per ten thousand, with Envoy's runtime keys able to override
// them.
type Tracing struct {
	ClientSampling, RandomSampling, OverallSampling *typev3.FractionalPercent
	Runtime                                         *config.Runtime
	// Tracer is the provider's: traced requests get a span (tracer.go);
	// nil without a provider.
	Tracer Tracer
	// Tags are custom_tags, put on each span.
	Tags []CustomTag
	// SpawnUpstream: each upstream request gets a CLIENT span of its own
	// under the request's (spawn_upstream_span).
	SpawnUpstream bool
	// ChildSpans: the router's start_child_span, the same upstream spans;
	// unlike SpawnUpstream it leaves the request's own span as it is
	// (the CLIENT side on an OUTBOUND listener).
	ChildSpans bool
	// Outbound: the listener's traffic_direction is OUTBOUND.
	Outbound bool
	// NodeID and Zone are this proxy's node id and locality zone, the
	// node_id and zone tags; MaxPathTagLength is how much of the path
	// http.url keeps (0: DefaultMaxPathTagLength).
	NodeID, Zone     string
	MaxPathTagLength int
}

// RequestIDOptions are the UUID request_id_extension's: pack the trace
// reason into the id, and sample by the id.
type RequestIDOptions struct {
	PackTraceReason, UseForSampling bool
}

// DefaultRequestID is the UUID extension's defaults.
var DefaultRequestID = RequestIDOptions{PackTraceReason: true, UseForSampling: true}

// TraceReason is why a request is traced (Envoy's Tracing::Reason).
type TraceReason uint8

const (
	NotTraceable TraceReason = iota
	TraceSampled
	TraceServiceForced
	TraceClientForced
)

// The UUID's 15th character carries the reason (Envoy's UUID extension).
const (
	uuidLength    = 36
	traceBytePos  = 14
	traceForced   = 'a'
	traceSampled  = '9'
	traceClient   = 'b'
	traceNone     = '4'
	forceTraceHdr = "x-envoy-force-trace"
	clientTraceID = "x-client-trace-id"
)

// traceReason reads the reason packed into x-request-id.
func traceReason(id []byte) TraceReason {
	if len(id) != uuidLength {
		return NotTraceable
	}
	switch id[traceBytePos] {
	case traceForced:
		return TraceServiceForced
	case traceSampled:
		return TraceSampled
	case traceClient:
		return TraceClientForced
	}
	return NotTraceable
}

// setTraceReason packs r into x-request-id (a UUID's length only).
func (s *Stream) setTraceReason(h *protocol.Headers, r TraceReason) {
	if !s.cfg.RequestID.PackTraceReason {
		return
	}
	id, ok := h.Get("x-request-id")
	if !ok || len(id) != uuidLength {
		return
	}
	c := byte(traceNone)
	switch r {
	case TraceServiceForced:
		c = traceForced
	case TraceSampled:
		c = traceSampled
	case TraceClientForced:
		c = traceClient
	}
	if id[traceBytePos] == c {
		return
	}
	s.scratch = append(s.scratch[:0], id...)
	s.scratch[traceBytePos] = c
	h.SetBytes("x-request-id", s.scratch)
}

// requestIDInteger is the id's first eight hex digits (Envoy's
// getInteger); false when they are not.
func requestIDInteger(id []byte) (uint64, bool) {
	if len(id) < 8 {
		return 0, false
	}
	var v uint64
	for _, c := range id[:8] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}

// decideTrace is Envoy's tracing header mutation and its stats: a
// request already traced (by the reason in its id) stays so; else a client
// trace id (client_sampling), x-envoy-force-trace, or the id's value
// against random_sampling trace it; overall_sampling may take it back.
func (s *Stream) decideTrace(h *protocol.Headers) {
	t := s.cfg.Tracing
	if t == nil {
		return
	}
	r := s.traceDecision(h, t)
	st := s.cfg.Stats
	switch r {
	case TraceSampled:
		st.TracingRandomSampling.Inc()
	case TraceServiceForced:
		st.TracingServiceForced.Inc()
	case TraceClientForced:
		st.TracingClientEnabled.Inc()
	default:
		st.TracingNotTraceable.Inc()
	}
	if t.Tracer != nil {
		s.span = t.Tracer.Start(h, s.start, t.Outbound && !t.SpawnUpstream, r != NotTraceable)
		if s.span != nil && t.Outbound {
			s.spanHost = string(h.Host())
		}
	}
}

func (s *Stream) traceDecision(h *protocol.Headers, t *Tracing) TraceReason {
	if !s.cfg.RequestID.UseForSampling {
		return TraceSampled
	}
	id, _ := h.Get("x-request-id")
	n, ok := requestIDInteger(id)
	if !ok {
		return NotTraceable
	}
	n %= 10000
	snap := t.Runtime.Snapshot()
	r := traceReason(id)
	if r == NotTraceable {
		switch {
		case h.Has(clientTraceID) && snap.FeatureEnabled("tracing.client_enabled", t.ClientSampling, rand.Uint64()):
			r = TraceClientForced
		case h.Has(forceTraceHdr):
			r = TraceServiceForced
		case snap.FeatureEnabled("tracing.random_sampling", t.RandomSampling, n):
			r = TraceSampled
		}
		if r != NotTraceable {
			s.setTraceReason(h, r)
		}
	}
	if r != NotTraceable && !snap.FeatureEnabled("tracing.global_enabled", t.OverallSampling, n) {
		r = NotTraceable
		s.setTraceReason(h, r)
	}
	return r
}
