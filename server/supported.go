package server

import "github.com/straitproxy/strait/config"

// supported is what the server implements of the Bootstrap itself; the
// listeners, clusters and extensions check their own parts.
var supported = config.NewSupport(map[string]string{
	"envoy.config.bootstrap.v3.Bootstrap": `static_resources admin
		-node -watchdogs -dynamic_resources layered_runtime`,
	"envoy.config.bootstrap.v3.LayeredRuntime":            `layers`,
	"envoy.config.bootstrap.v3.RuntimeLayer":              `name static_layer disk_layer admin_layer rtds_layer`,
	"envoy.config.bootstrap.v3.RuntimeLayer.DiskLayer":    `symlink_root subdirectory append_service_cluster`,
	"envoy.config.bootstrap.v3.RuntimeLayer.RtdsLayer":    `name rtds_config`,
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources": `listeners clusters secrets`,
	"envoy.config.bootstrap.v3.Admin":                     `address access_log_path access_log`,
	"envoy.config.core.v3.Address":                        `socket_address`,
	"envoy.config.core.v3.SocketAddress":                  `address port_value protocol`,
})

// supportedDynamic is what the server implements of dynamic_resources
// and of the config sources in it (and in clusters and connection
// managers: supportedSource).
var supportedDynamic = config.NewSupport(map[string]string{
	"envoy.config.bootstrap.v3.Bootstrap.DynamicResources": `ads_config lds_config cds_config`,
	"envoy.config.core.v3.ConfigSource":                    `ads api_config_source initial_fetch_timeout resource_api_version`,
	"envoy.config.core.v3.ApiConfigSource": `api_type transport_api_version grpc_services
		cluster_names refresh_delay request_timeout set_node_on_first_message_only`,
	"envoy.config.core.v3.GrpcService":           `envoy_grpc`,
	"envoy.config.core.v3.GrpcService.EnvoyGrpc": `cluster_name`,
})

// supportedSource is what a ConfigSource may set.
var supportedSource = supportedDynamic
