package proxy

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/stats"
)

// Config is one built http_connection_manager: immutable, shared by all its
// connections and streams.
type Config struct {
	StatPrefix string
	// Routes holds the route table; RDS swaps it. An empty holder (RDS
	// not arrived) routes nothing: every request gets 404.
	Routes *atomic.Pointer[router.Table]
	// Scopes, when set, holds scoped routes (scoped_routes): the request's
	// scope key picks the route table. Routes is then unused.
	Scopes  *atomic.Pointer[router.Scopes]
	Filters []HTTPFilter
	// VirtualHosts, when set (the on_demand filter with RDS), asks VHDS
	// for a request's virtual host when no route matches it.
	VirtualHosts filter.VirtualHostDemand
	Clusters     filter.Clusters
	Pool         *network.Pool
	Log          *slog.Logger
	Stats        *Stats
	Codec        *protocol.Codec
	Draining     func() bool

	ServerName        string // "" leaves the upstream's server header
	UseRemoteAddress  bool
	XffNumTrustedHops int
	GenerateRequestID bool
	// RequestID is request_id_extension (the UUID one); Tracing the
	// tracing block without a provider (nil: none).
	RequestID RequestIDOptions
	Tracing   *Tracing
	// AlwaysSetRequestIDInResponse copies x-request-id to the response
	// (always_set_request_id_in_response).
	AlwaysSetRequestIDInResponse bool
	// XFCC and ClientCertDetails are forward_client_cert_details and
	// set_current_client_cert_details (xfcc.go).
	XFCC              XFCCMode
	ClientCertDetails ClientCertDetails
	// PathNormalization is normalize_path, merge_slashes and
	// path_with_escaped_slashes_action (pathnorm.go).
	PathNormalization PathNormalization
	// Proxy100Continue is proxy_100_continue: Expect: 100-continue goes
	// upstream and the upstream's 100 Continue comes back; without it the
	// codec answers 100 Continue itself and Expect is removed.
	Proxy100Continue bool
	// Upgrades lists the allowed Upgrade values, lowercase ("websocket").
	Upgrades map[string]bool

	IdleTimeout              time.Duration // connection without streams
	StreamIdleTimeout        time.Duration // no bytes moved on a stream
	RequestTimeout           time.Duration // whole request; 0 = none
	MaxRequestsPerConnection int
	// MaxStreamDuration bounds each stream from its start (0: none)
	// unless its route sets its own (common_http_protocol_options).
	MaxStreamDuration time.Duration

	Codecs protocol.ServerOptions
	// RetryBufferLimit is how much request body is kept to replay on retry.
	RetryBufferLimit int

	// RPC marks a framed-RPC connection manager (dubbo_proxy): its streams
	// are calls, not HTTP requests, so HTTP's header handling (hop-by-hop
	// fields, X-Forwarded-For, request ids, the server header) is skipped.
	RPC bool
	// UpstreamCodec, when set, is the protocol spoken to every upstream
	// host, whatever the cluster's HTTP protocol options say (a pool per
	// host and protocol).
	UpstreamCodec *protocol.Codec
	// Observer, when set, hears of every finished stream.
	Observer Observer
	// AccessLogs are the connection manager's access_log (nil: none).
	AccessLogs accesslog.Loggers
}

// Observer hears of finished streams (dubbo_proxy's per-method stats).
type Observer interface {
	// StreamDone is called on the stream's worker as the stream ends: req
	// is its request's headers (valid only during the call), status the
	// response's (a local reply's included; 499 when the client left
	// first), exception whether an RPC reply carried an application
	// exception, took the stream's whole time. It must not block.
	StreamDone(req *protocol.Headers, status int, exception bool, took time.Duration)
}

// Stats are the connection manager's counters ("http.<prefix>.*").
type Stats struct {
	CxTotal, CxHTTP1Total, CxHTTP2Total, CxDestroy, CxProtocolError, CxIdleTimeout, CxDrainClose, CxUpgradesTotal *stats.Counter
	CxActive, RqActive                                                                                            *stats.Gauge
	RqTotal, RqHTTP1Total, RqHTTP2Total, RqRxReset, RqTimeout, RqIdleTimeout, RqCompleted                         *stats.Counter
	RqMaxDurationReached                                                                                          *stats.Counter
	NoRoute, NoCluster, DirectResponse, Redirect, RqOverload, RqHeaderTimeout                                     *stats.Counter
	RqFailedPathNormalization                                                                                     *stats.Counter
	// Tracing decisions (http.<prefix>.tracing.*).
	TracingRandomSampling, TracingServiceForced, TracingClientEnabled, TracingNotTraceable *stats.Counter
	// Mirroring: copies started, abandoned (lagging past the buffer
	// limit, or the request cut short) and failed (no cluster, overflow,
	// no host, upstream error or timeout).
	MirrorTotal, MirrorAbandoned, MirrorFailed *stats.Counter
	RqClass                                    [6]*stats.Counter
	RqTime                                     *stats.Histogram
}

// NewStats makes the counters under http.<prefix>.
func NewStats(root *stats.Scope, prefix string) *Stats {
	s := NewStatsUnder(root, "http", "envoy_http_conn_manager_prefix", prefix)
	sc := root.Scope("http", "envoy_http_conn_manager_prefix", prefix)
	s.TracingRandomSampling, s.TracingServiceForced = sc.Counter("tracing.random_sampling"), sc.Counter("tracing.service_forced")
	s.TracingClientEnabled, s.TracingNotTraceable = sc.Counter("tracing.client_enabled"), sc.Counter("tracing.not_traceable")
	return s
}

// NewStatsUnder makes the counters under kind.<prefix> (dubbo_proxy's:
// "dubbo"), label naming the prefix in Prometheus form.
func NewStatsUnder(root *stats.Scope, kind, label, prefix string) *Stats {
	sc := root.Scope(kind, label, prefix)
	s := &Stats{
		CxTotal: sc.Counter("downstream_cx_total"), CxHTTP1Total: sc.Counter("downstream_cx_http1_total"), CxHTTP2Total: sc.Counter("downstream_cx_http2_total"),
		CxDestroy: sc.Counter("downstream_cx_destroy"), CxProtocolError: sc.Counter("downstream_cx_protocol_error"),
		CxIdleTimeout: sc.Counter("downstream_cx_idle_timeout"), CxDrainClose: sc.Counter("downstream_cx_drain_close"),
		CxUpgradesTotal: sc.Counter("downstream_cx_upgrades_total"),
		CxActive:        sc.Gauge("downstream_cx_active"), RqActive: sc.Gauge("downstream_rq_active"),
		RqTotal: sc.Counter("downstream_rq_total"), RqHTTP1Total: sc.Counter("downstream_rq_http1_total"), RqHTTP2Total: sc.Counter("downstream_rq_http2_total"),
		RqRxReset: sc.Counter("downstream_rq_rx_reset"), RqTimeout: sc.Counter("downstream_rq_timeout"),
		RqIdleTimeout: sc.Counter("downstream_rq_idle_timeout"), RqMaxDurationReached: sc.Counter("downstream_rq_max_duration_reached"),
		RqCompleted: sc.Counter("downstream_rq_completed"),
		NoRoute:     sc.Counter("no_route"), NoCluster: sc.Counter("no_cluster"),
		DirectResponse: sc.Counter("rq_direct_response"), Redirect: sc.Counter("rq_redirect"),
		RqOverload: sc.Counter("downstream_rq_overload_close"), RqHeaderTimeout: sc.Counter("downstream_rq_header_timeout"),
		RqFailedPathNormalization: sc.Counter("downstream_rq_failed_path_normalization"),
		RqTime:                    sc.Histogram("downstream_rq_time"),
		MirrorTotal:               sc.Counter("rq_mirror_total"), MirrorAbandoned: sc.Counter("rq_mirror_abandoned"),
		MirrorFailed: sc.Counter("rq_mirror_failed"),
	}
	for i := 1; i <= 5; i++ {
		s.RqClass[i] = sc.Counter("downstream_rq_" + string(rune('0'+i)) + "xx")
	}
	return s
}
