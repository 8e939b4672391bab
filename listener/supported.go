package listener

import "github.com/straitproxy/strait/config"

// supported is what Build implements of a Listener; typed_config values
// are checked by their filters.
var supported = config.NewSupport(map[string]string{
	"envoy.config.listener.v3.Listener": `name address filter_chains
		default_filter_chain per_connection_buffer_limit_bytes
		-metadata traffic_direction listener_filters listener_filters_timeout
		continue_on_listener_filters_timeout access_log
		max_connections_to_accept_per_socket_event bind_to_port use_original_dst`,
	"envoy.config.listener.v3.ListenerFilter": `name typed_config filter_disabled`,
	"envoy.config.listener.v3.ListenerFilterChainMatchPredicate": `or_match and_match
		not_match any_match destination_port_range`,
	"envoy.config.listener.v3.ListenerFilterChainMatchPredicate.MatchSet": `rules`,
	"envoy.type.v3.Int32Range":           `start end`,
	"envoy.config.core.v3.Address":       `socket_address`,
	"envoy.config.core.v3.SocketAddress": `address port_value protocol`,
	"envoy.config.listener.v3.FilterChain": `filter_chain_match filters name
		transport_socket transport_socket_connect_timeout -metadata`,
	"envoy.config.core.v3.TransportSocket": `name typed_config`,
	"envoy.config.listener.v3.FilterChainMatch": `destination_port prefix_ranges
		source_prefix_ranges source_ports server_names transport_protocol
		application_protocols`,
	"envoy.config.listener.v3.Filter": `name typed_config`,
})
