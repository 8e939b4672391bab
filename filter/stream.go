package filter

import (
	"net"
	"net/netip"
	"time"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
)

// The stream filter contract (docs/design/filters.md). A stream filter
// instance serves one stream; it implements any of the phase interfaces
// below, and the engine calls only those. Decoders run in config order,
// encoders in reverse. Callbacks come on the stream's worker, one at a
// time; a filter that waits (Stop) is resumed on a worker too.

// StreamFilter is one stream's filter instance: anything implementing
// some of the phase interfaces.
type StreamFilter any

// Status is what a phase callback returns.
type Status uint8

const (
	// Continue passes the headers, data or trailers on.
	Continue Status = iota
	// Stop (headers phases): iteration stops; the filter resumes it with
	// the Continuation it took from Callbacks.Continuation, from any
	// goroutine (a timer, a call to another service). No worker is held
	// meanwhile. After SendLocalReply the status does not matter.
	Stop
	// StopAndBuffer (data phases): the engine keeps this piece and offers
	// the filter everything kept, with the next piece, until the filter
	// returns Continue (at the latest with end of stream). What is kept
	// is bounded by the connection manager's buffer limit: past it the
	// request gets 413 (decoding) or the response 500 or a reset
	// (encoding).
	StopAndBuffer
)

// DecoderHeaders sees the request headers. end: the request has no body.
type DecoderHeaders interface {
	DecodeHeaders(cb Callbacks, h *protocol.Headers, end bool) Status
}

// DecoderData sees each piece of the request body as it streams (b.B may
// be changed or replaced).
type DecoderData interface {
	DecodeData(cb Callbacks, b *Buffer, end bool) Status
}

// DecoderTrailers sees the request trailers.
type DecoderTrailers interface {
	DecodeTrailers(cb Callbacks, t *protocol.Headers) Status
}

// EncoderHeaders sees the response headers (the upstream's, or a local
// reply's). end: the response has no body.
type EncoderHeaders interface {
	EncodeHeaders(cb Callbacks, h *protocol.Headers, end bool) Status
}

// EncoderData sees each piece of the response body.
type EncoderData interface {
	EncodeData(cb Callbacks, b *Buffer, end bool) Status
}

// EncoderTrailers sees the response trailers.
type EncoderTrailers interface {
	EncodeTrailers(cb Callbacks, t *protocol.Headers) Status
}

// Resumed is a filter that acts again when the stream it stopped
// resumes: OnResume runs on the stream's worker before the next filter
// (the fault filter aborts after its delay). It may reply locally, stop
// again, or continue.
type Resumed interface {
	OnResume(cb Callbacks) Status
}

// Destroyer hears that the stream ended: completed, reset, or the client
// left while the filter waited. A filter stops its timers here.
type Destroyer interface {
	OnDestroy()
}

// Buffer is a piece of body a data filter may read, change or replace.
type Buffer struct {
	B []byte
}

// Callbacks is the stream as its filters see it.
type Callbacks interface {
	// Info is the stream's info; filters read it and may write its
	// State.
	Info() *StreamInfo
	// RouteName is the name of the route the request takes ("" when no
	// route matches), matched on first use and cached.
	RouteName() string
	// ClusterName is the cluster of that route ("" without one; for
	// weighted clusters, the one picked for this request).
	ClusterName() string
	// ClearRouteCache makes the next use, or the router, match the route
	// again (after a filter changed what routing reads).
	ClearRouteCache()
	// PerRoute is the route's typed_per_filter_config for the calling
	// filter, by the name it has in http_filters (route over virtual
	// host over route configuration), as the filter's per-route builder
	// made it; nil when none.
	PerRoute() any
	// Continuation resumes a filter that returns Stop.
	Continuation() Continuation
	// SendLocalReply answers the request with status and body (text/plain;
	// for gRPC requests, grpc-status mapped from status and body as its
	// message); edit, when not nil, may change the reply's headers. The
	// reply passes through the encoder filters of the filters before the
	// caller. After the response started, it resets the stream.
	SendLocalReply(status int, body string, edit func(h *protocol.Headers))
	// BufferLimit is the most a data filter may make the engine keep.
	BufferLimit() int
	// LimitResponseRate makes the response body leave at no more than
	// bytesPerSecond (0: no limit), from its first byte on: the engine
	// writes it in small pieces, waiting between them (the fault
	// filter's response_rate_limit). It may be called in any phase
	// before the body starts.
	LimitResponseRate(bytesPerSecond int64)
}

// Continuation resumes a stream a filter stopped. It is a value: keep it
// and call Continue once, from any goroutine. A Continue on a stream
// that ended meanwhile (the client left) does nothing.
type Continuation struct {
	R   Resumer
	Gen uint64
}

// Continue resumes the stream at the next filter.
func (k Continuation) Continue() {
	if k.R != nil {
		k.R.Resume(k.Gen)
	}
}

// Resumer is implemented by the engine's stream.
type Resumer interface {
	Resume(gen uint64)
}

// StreamInfo is what filters (and, in issue 15, access logs) know of a
// stream.
type StreamInfo struct {
	RemoteAddr net.Addr
	LocalAddr  net.Addr
	// ClientAddr is the original client's address, as Envoy derives it:
	// with use_remote_address, the peer's (or, with xff_num_trusted_hops
	// N, the N-th x-forwarded-for entry from the right); without it, the
	// last x-forwarded-for entry; the peer's when there is none.
	ClientAddr netip.Addr
	// Protocol is "HTTP/1.1", "HTTP/1.0" or "HTTP/2".
	Protocol string
	// Conn is the downstream connection: its TLSState (peer certificates,
	// version, SNI, ALPN) and Info (what the listener filters learned).
	Conn      *network.Conn
	StartTime time.Time
	// RouteName, ClusterName and UpstreamHost ("ip:port" of the last
	// attempt) are filled as the request is routed and sent;
	// UpstreamStart is when it was first sent upstream.
	RouteName     string
	ClusterName   string
	UpstreamHost  string
	UpstreamStart time.Time
	// BytesReceived and BytesSent count the request body read from the
	// client and the response body written to it.
	BytesReceived, BytesSent uint64
	// ResponseFlags are Envoy's (UH, UF, FI, ...).
	ResponseFlags accesslog.Flags
	// ResponseCodeDetails is what a filter's local reply says of its
	// cause, in Envoy's words ("fault_filter_abort"); the access log's
	// %RESPONSE_CODE_DETAILS%. Set it before SendLocalReply.
	ResponseCodeDetails string
	// State is the filter state: values filters share along the chain,
	// by name. Nil until a filter sets one.
	State map[string]any
	// Metadata is the request's dynamic metadata: values by filter
	// namespace ("envoy.filters.http.rbac") and key, for what reads it
	// later (the tracer's custom tags). Read values with SetMetadata's
	// namespace and key: a pooled stream keeps the maps, emptied, across
	// requests, so an empty namespace map may be there from an earlier
	// request (its presence says nothing).
	Metadata map[string]map[string]string
}

// SetMetadata sets a dynamic metadata value.
func (si *StreamInfo) SetMetadata(ns, key, value string) {
	if si.Metadata == nil {
		si.Metadata = map[string]map[string]string{}
	}
	m := si.Metadata[ns]
	if m == nil {
		m = map[string]string{}
		si.Metadata[ns] = m
	}
	m[key] = value
}

// StateApplicationProtocols is the filter state that overrides the ALPN
// protocols the request's upstream TLS connection offers (Envoy's
// envoy.network.application_protocols): a []string. Such connections are
// pooled apart from the others.
const StateApplicationProtocols = "envoy.network.application_protocols"

// AddResponseFlag adds Envoy response flags.
func (si *StreamInfo) AddResponseFlag(f accesslog.Flags) { si.ResponseFlags |= f }

// SetState records a value in the filter state.
func (si *StreamInfo) SetState(name string, v any) {
	if si.State == nil {
		si.State = map[string]any{}
	}
	si.State[name] = v
}
