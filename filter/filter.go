package filter

import (
	"fmt"
	"log/slog"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/transport"
	"github.com/straitproxy/strait/upstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// Clusters finds a cluster by name in the current configuration.
type Clusters interface {
	// Get returns the serving cluster named name.
	Get(name string) (*upstream.Cluster, bool)
	// Known reports whether a cluster of that name is serving or warming:
	// what validate_clusters checks at build time.
	Known(name string) bool
	// Dynamic reports whether clusters may still arrive (CDS is
	// configured). Filters then resolve the clusters they name when a
	// connection or request comes, as Envoy does, and do not refuse a
	// config whose cluster is not there yet.
	Dynamic() bool
}

// BuildContext is what a filter factory may use while it is built and
// afterwards: it outlives the connections of its listener.
type BuildContext struct {
	Listener string
	// Port is the listener's port (0 when it has none).
	Port int
	// BufferLimit is the listener's per_connection_buffer_limit_bytes, 0
	// when not configured.
	BufferLimit int
	// RPCMaxBody is the listener's rpc_max_body_bytes (its strait
	// metadata): the body a framed-RPC call may declare; 0: the default.
	RPCMaxBody int
	Clusters   Clusters
	Stats      *stats.Scope
	Pool       *network.Pool
	Log        *slog.Logger
	// Draining reports whether the listener is draining.
	Draining func() bool
	// Routes delivers route configurations by name (RDS); nil when the
	// configuration has no xDS.
	Routes RouteSource
	// CheckSource refuses a config source this process cannot subscribe
	// to (nil: only ads: {} is accepted).
	CheckSource func(src *corev3.ConfigSource) error
	// Runtime is the layered runtime, read by features that take a
	// runtime key (nil: their defaults).
	Runtime *config.Runtime
	// Secrets is the secret store TLS contexts name secrets from.
	Secrets transport.SecretSource
	// AccessLogs builds access_log lists (nil: file and stream loggers
	// are refused).
	AccessLogs *accesslog.Context
	// StatPrefix is, for HTTP filters, their connection manager's
	// stat_prefix (their stats go under http.<prefix>.).
	StatPrefix string
	// Node is this proxy's node (id, cluster, metadata, locality), as the
	// management server knows it; nil when there is none.
	Node *corev3.Node
	// Outbound: the listener's traffic_direction is OUTBOUND (a traced
	// request's span is then the egress kind, as in Envoy).
	Outbound bool
}

// RouteSource delivers RDS route configurations by name.
type RouteSource interface {
	// Subscribe asks for the route configuration named name from the
	// config source src (rds.config_source; its initial_fetch_timeout
	// bounds how long a new listener waits for it, default 15 s). update
	// is called with each version, at once if one is known: it builds the
	// version and returns a commit that installs it, or an error that
	// refuses the version (which is then NACKed and changes nothing). The
	// subscription lasts as long as the listener being built: the source
	// ends it when that listener leaves.
	Subscribe(name string, src *corev3.ConfigSource, update RouteUpdate) error
	// SubscribeScopes asks for scoped routes (scoped_routes): the scopes
	// given inline or by SRDS, and the route configuration each scope
	// names, by RDS. The subscription lasts as long as Subscribe's.
	SubscribeScopes(s ScopeSubscription) error
	// OnDemand is the handle through which requests ask the route
	// configuration named name for a virtual host it lacks, by VHDS
	// (envoy.filters.http.on_demand). It may be used for as long as the
	// subscription lasts; it asks nothing while the route configuration
	// has no vhds.
	OnDemand(name string) VirtualHostDemand
}

// VirtualHostDemand asks a route configuration's VHDS for the virtual
// host of one host ("<route configuration>/<host>"), on demand.
type VirtualHostDemand interface {
	// Demand asks for host's virtual host (host lowercase). ok is false
	// when there is nothing to wait for: no VHDS, the server answered
	// for this host already, or the bound on hosts asked for is reached.
	// Otherwise done is closed once the server's answer has been applied
	// (or VHDS went away); cancel forgets the waiter.
	Demand(host string) (done <-chan struct{}, cancel func(), ok bool)
}

// OnDemandRoutes marks the on_demand HTTP filter: a connection manager
// with it asks VHDS for a request's virtual host when no route matches,
// and routes the request again once the answer arrives. It is applied
// at the routing step, not as a link of the filter chain.
type OnDemandRoutes interface {
	RoutesOnDemand()
}

// ScopeSubscription is a connection manager's scoped routes.
type ScopeSubscription struct {
	// Inline are scoped_route_configurations_list's scopes; else SRDS is
	// where the scopes come from (every scope of the source).
	Inline []*routev3.ScopedRouteConfiguration
	SRDS   *corev3.ConfigSource
	// RDS is where the scopes' route configurations come from.
	RDS *corev3.ConfigSource
	// Update builds one version of the scopes with the route
	// configurations known (a scope whose routes have not arrived yet is
	// left out: 404), and returns a commit or an error that refuses it.
	Update ScopesUpdate
}

// ScopesUpdate builds a version of scoped routes; routes are by name.
type ScopesUpdate func(scopes []*routev3.ScopedRouteConfiguration, routes map[string]*routev3.RouteConfiguration) (commit func(), err error)

// RouteUpdate builds one version of a route configuration; nil means the
// configuration was removed.
type RouteUpdate func(rc *routev3.RouteConfiguration) (commit func(), err error)

// NetworkFactory is a built network filter, shared by every connection.
type NetworkFactory interface {
	// Terminal reports whether the filter ends the chain (it consumes the
	// bytes: tcp_proxy, http_connection_manager).
	Terminal() bool
	// NewHandler attaches the filter to a new connection. next is the
	// handler of the filters after it (nil for a terminal filter); the
	// returned handler receives the connection's bytes first. An error
	// refuses the connection.
	NewHandler(c *network.Conn, next network.Handler) (network.Handler, error)
}

// NetworkAdopter is a terminal network filter that takes over the
// connections its counterpart in the previous process migrated (hot
// restart; network.Migrator is that side): Adopt returns the handler
// that serves c on from where h left it. The connection was accepted
// before and its other filters already ran; the caller Starts it.
type NetworkAdopter interface {
	Adopt(c *network.Conn, h *network.Handoff) (network.Handler, error)
}

// HTTPFactory is a built stream filter, shared by every stream.
type HTTPFactory interface {
	// New returns the filter for one stream (a stateless filter returns
	// itself). The engine uses the phase interfaces it implements
	// (stream.go): DecoderHeaders, DecoderData, DecoderTrailers,
	// EncoderHeaders, EncoderData, EncoderTrailers, Destroyer.
	New() StreamFilter
}

// Terminal marks the HTTP filter that ends the chain (the router): the
// connection manager routes and forwards after the filters before it.
type Terminal interface {
	IsTerminal()
}

// ChildSpans is a Terminal filter that may ask for a span of its own for
// each upstream request of a traced request (the router's
// start_child_span; the connection manager's spawn_upstream_span does
// the same).
type ChildSpans interface {
	StartChildSpan() bool
}

// ListenerFilter looks at a connection's first bytes, before its filter
// chain is chosen, and records what it learns (tls_inspector: SNI and
// ALPN; http_inspector: the HTTP version). It consumes nothing: the
// chosen chain gets the same bytes. One built filter serves every
// connection of its listener, from many goroutines at once.
type ListenerFilter interface {
	// Inspect is given the bytes read so far, from the first; it
	// returns done=false to be offered them again with more. An error
	// closes the connection.
	Inspect(data []byte, info *network.ConnInfo) (done bool, err error)
}

// AcceptFilter is a ListenerFilter that acts on a connection as it is
// accepted, before any byte is read (original_dst: the connection's
// original destination). Its Inspect is never called. An error closes
// the connection.
type AcceptFilter interface {
	ListenerFilter
	OnAccept(c *network.Conn) error
}

// ListenerBuilder builds a listener filter from its decoded, validated
// config.
type ListenerBuilder func(bc *BuildContext, cfg proto.Message) (ListenerFilter, error)

// RegisterListener registers a listener filter by name and config type.
func RegisterListener(name string, cfg proto.Message, b ListenerBuilder) {
	config.Register(config.Extension{Kind: config.ListenerFilter, Name: name, TypeURL: typeURL(cfg), Factory: b})
}

// RegisterListenerStruct registers a listener filter whose config is a
// TypedStruct (no Envoy proto): typeURL is the struct's type URL.
func RegisterListenerStruct(name, typeURL string, b ListenerBuilder) {
	config.Register(config.Extension{Kind: config.ListenerFilter, Name: name, TypeURL: typeURL, Factory: b})
}

// BuildListener decodes, validates and builds one listener filter; a
// filter given by name alone (no typed_config) is built from its empty
// config, as Envoy still accepts for the inspectors.
func BuildListener(bc *BuildContext, name string, typed *anypb.Any) (ListenerFilter, error) {
	if typed == nil {
		ext, ok := config.ByName(config.ListenerFilter, name)
		if !ok {
			return nil, fmt.Errorf("unknown listener filter %q and no typed_config (supported: %s)", name, strings.Join(config.TypeURLs(config.ListenerFilter), ", "))
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(ext.TypeURL)
		if err != nil {
			return nil, err
		}
		return ext.Factory.(ListenerBuilder)(bc, mt.New().Interface())
	}
	ext, msg, err := decode(config.ListenerFilter, typed)
	if err != nil {
		return nil, err
	}
	f, err := ext.Factory.(ListenerBuilder)(bc, msg)
	return f, config.At("typed_config", err)
}

// NetworkBuilder builds a network filter from its decoded, validated config.
type NetworkBuilder func(bc *BuildContext, cfg proto.Message) (NetworkFactory, error)

// HTTPBuilder builds a stream filter from its decoded, validated config.
type HTTPBuilder func(bc *BuildContext, cfg proto.Message) (HTTPFactory, error)

// RegisterNetwork registers a network filter by name and config type.
func RegisterNetwork(name string, cfg proto.Message, b NetworkBuilder) {
	config.Register(config.Extension{Kind: config.NetworkFilter, Name: name, TypeURL: typeURL(cfg), Factory: b})
}

// PerRouteBuilder builds a stream filter's per-route config
// (typed_per_filter_config) from its decoded, validated message into the
// immutable value Callbacks.PerRoute returns; it runs when the route
// table compiles, and its error refuses the route configuration.
type PerRouteBuilder = func(cfg proto.Message) (any, error)

// RegisterHTTPPerRoute registers the per-route config type of the stream
// filter named name.
func RegisterHTTPPerRoute(name string, cfg proto.Message, b PerRouteBuilder) {
	config.Register(config.Extension{Kind: config.HTTPPerRoute, Name: name, TypeURL: typeURL(cfg), Factory: b})
}

// RegisterHTTPStruct registers a stream filter whose config has no proto:
// it comes as a TypedStruct naming typeURL, and b gets its
// *structpb.Struct (config.DecodeStruct decodes it strictly).
func RegisterHTTPStruct(name, typeURL string, b HTTPBuilder) {
	config.Register(config.Extension{Kind: config.HTTPFilter, Name: name, TypeURL: typeURL, Factory: b})
}

// RegisterNetworkStruct is RegisterHTTPStruct for network filters.
func RegisterNetworkStruct(name, typeURL string, b NetworkBuilder) {
	config.Register(config.Extension{Kind: config.NetworkFilter, Name: name, TypeURL: typeURL, Factory: b})
}

// RegisterHTTPPerRouteStruct registers a TypedStruct per-route config.
func RegisterHTTPPerRouteStruct(name, typeURL string, b PerRouteBuilder) {
	config.Register(config.Extension{Kind: config.HTTPPerRoute, Name: name, TypeURL: typeURL, Factory: b})
}

// RegisterHTTP registers a stream filter by name and config type.
func RegisterHTTP(name string, cfg proto.Message, b HTTPBuilder) {
	config.Register(config.Extension{Kind: config.HTTPFilter, Name: name, TypeURL: typeURL(cfg), Factory: b})
}

func typeURL(m proto.Message) string {
	return "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
}

// BuildNetwork decodes, validates and builds one network filter.
func BuildNetwork(bc *BuildContext, typed *anypb.Any) (NetworkFactory, error) {
	ext, msg, err := decode(config.NetworkFilter, typed)
	if err != nil {
		return nil, err
	}
	f, err := ext.Factory.(NetworkBuilder)(bc, msg)
	return f, config.At("typed_config", err)
}

// BuildHTTP decodes, validates and builds one stream filter.
func BuildHTTP(bc *BuildContext, typed *anypb.Any) (HTTPFactory, error) {
	ext, msg, err := decode(config.HTTPFilter, typed)
	if err != nil {
		return nil, err
	}
	f, err := ext.Factory.(HTTPBuilder)(bc, msg)
	return f, config.At("typed_config", err)
}

func decode(k config.Kind, typed *anypb.Any) (*config.Extension, proto.Message, error) {
	return config.Decode(k, typed)
}
