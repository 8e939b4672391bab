package upstream

import "github.com/straitproxy/strait/config"

// supported is what BuildCluster implements of a Cluster.
var supported = config.NewSupport(map[string]string{
	"envoy.config.cluster.v3.Cluster": `name type connect_timeout lb_policy
		load_assignment circuit_breakers dns_refresh_rate dns_lookup_family
		per_connection_buffer_limit_bytes max_requests_per_connection
		typed_extension_protocol_options eds_cluster_config common_lb_config transport_socket transport_socket_matches -metadata
		alt_stat_name respect_dns_ttl dns_jitter typed_dns_resolver_config filters outlier_detection
		cleanup_interval original_dst_lb_config upstream_bind_config`,
	"envoy.config.core.v3.BindConfig": `source_address`,
	"envoy.config.cluster.v3.Cluster.OriginalDstLbConfig": `use_http_header http_header_name
		upstream_port_override metadata_key`,
	"envoy.config.cluster.v3.OutlierDetection": `consecutive_5xx interval base_ejection_time
		max_ejection_percent enforcing_consecutive_5xx enforcing_success_rate success_rate_minimum_hosts
		success_rate_request_volume success_rate_stdev_factor consecutive_gateway_failure
		enforcing_consecutive_gateway_failure split_external_local_origin_errors
		consecutive_local_origin_failure enforcing_consecutive_local_origin_failure
		enforcing_local_origin_success_rate failure_percentage_threshold enforcing_failure_percentage
		enforcing_failure_percentage_local_origin failure_percentage_minimum_hosts
		failure_percentage_request_volume max_ejection_time max_ejection_time_jitter
		successful_active_health_check_uneject_host always_eject_one_host`,
	"envoy.config.cluster.v3.Filter":                        `name typed_config`,
	"envoy.config.cluster.v3.Cluster.TransportSocketMatch":  `name match transport_socket`,
	"envoy.config.core.v3.TypedExtensionConfig":             `name typed_config`,
	"envoy.config.core.v3.TransportSocket":                  `name typed_config`,
	"envoy.config.cluster.v3.Cluster.EdsClusterConfig":      `eds_config service_name`,
	"envoy.config.core.v3.ConfigSource":                     `ads api_config_source initial_fetch_timeout resource_api_version`,
	"envoy.config.cluster.v3.Cluster.CommonLbConfig":        `locality_weighted_lb_config healthy_panic_threshold`,
	"envoy.config.endpoint.v3.ClusterLoadAssignment":        `cluster_name endpoints policy`,
	"envoy.config.endpoint.v3.ClusterLoadAssignment.Policy": `overprovisioning_factor`,
	"envoy.config.endpoint.v3.LocalityLbEndpoints":          `lb_endpoints priority load_balancing_weight -locality`,
	"envoy.config.endpoint.v3.LbEndpoint":                   `endpoint health_status load_balancing_weight metadata`,
	"envoy.config.endpoint.v3.Endpoint":                     `address hostname`,
	"envoy.config.core.v3.Address":                          `socket_address`,
	"envoy.config.core.v3.SocketAddress":                    `address port_value protocol`,
	"envoy.config.cluster.v3.CircuitBreakers":               `thresholds`,
	"envoy.type.v3.Percent":                                 `value`,
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds": `priority max_connections
		max_pending_requests max_requests max_retries -track_remaining`,
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": `common_http_protocol_options
		explicit_http_config use_downstream_protocol_config auto_config`,
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig": `http_protocol_options
		http2_protocol_options`,
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": `http_protocol_options
		http2_protocol_options`,
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig": `http_protocol_options
		http2_protocol_options`,
	"envoy.config.core.v3.Http2ProtocolOptions": `max_concurrent_streams initial_stream_window_size
		initial_connection_window_size connection_keepalive`,
	"envoy.config.core.v3.KeepaliveSettings":    `interval -timeout`,
	"envoy.config.core.v3.HttpProtocolOptions":  `idle_timeout max_requests_per_connection`,
	"envoy.config.core.v3.Http1ProtocolOptions": ``,
})
