package httpconnmgr

import "github.com/straitproxy/strait/config"

// supported is what build implements of HttpConnectionManager; the
// route_config is checked by the router package and each http filter's
// typed_config by that filter.
var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": `codec_type
		stat_prefix route_config rds http_filters server_name server_header_transformation
		use_remote_address generate_request_id max_request_headers_kb
		common_http_protocol_options stream_idle_timeout request_timeout request_headers_timeout upgrade_configs
		drain_timeout
		strip_any_host_port strip_matching_host_port xff_num_trusted_hops
		http2_protocol_options scoped_routes access_log
		forward_client_cert_details set_current_client_cert_details
		normalize_path merge_slashes path_with_escaped_slashes_action proxy_100_continue
		tracing request_id_extension always_set_request_id_in_response http_protocol_options`,
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing": `client_sampling
		random_sampling overall_sampling provider custom_tags spawn_upstream_span max_path_tag_length`,
	"envoy.type.tracing.v3.CustomTag":                                                `tag literal environment request_header metadata`,
	"envoy.type.tracing.v3.CustomTag.Literal":                                        `value`,
	"envoy.type.tracing.v3.CustomTag.Environment":                                    `name default_value`,
	"envoy.type.tracing.v3.CustomTag.Header":                                         `name default_value`,
	"envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension": `typed_config`,
	"envoy.config.trace.v3.Tracing.Http":                                             `name typed_config`,
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails": `subject
		cert chain dns uri`,
	"envoy.extensions.filters.network.http_connection_manager.v3.ScopedRoutes": `name scope_key_builder
		rds_config_source scoped_route_configurations_list scoped_rds`,
	"envoy.extensions.filters.network.http_connection_manager.v3.ScopedRds": `scoped_rds_config_source
		srds_resources_locator`,
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": `name typed_config disabled`,
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig": `upgrade_type
		enabled`,
	"envoy.extensions.filters.network.http_connection_manager.v3.Rds": `config_source route_config_name`,
	"envoy.config.core.v3.ConfigSource":                               `ads api_config_source initial_fetch_timeout resource_api_version`,
	"envoy.config.core.v3.HttpProtocolOptions":                        `idle_timeout max_headers_count max_requests_per_connection max_stream_duration`,
	// The HTTP/1.1 options: none of their fields yet (an empty message, as
	// Istio's pilot sends, is the defaults).
	"envoy.config.core.v3.Http1ProtocolOptions": ``,
	"envoy.config.core.v3.Http2ProtocolOptions": `max_concurrent_streams initial_stream_window_size
		initial_connection_window_size max_outbound_control_frames
		max_consecutive_inbound_frames_with_empty_payload max_inbound_priority_frames_per_stream
		max_inbound_window_update_frames_per_data_frame_sent`,
})
