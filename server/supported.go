package server

import "github.com/straitproxy/strait/config"

// supported is what the server implements of the Bootstrap itself; the
// listeners, clusters and extensions check their own parts.
var supported = config.NewSupport(map[string]string{
	"envoy.config.bootstrap.v3.Bootstrap": `static_resources admin
		-node -layered_runtime -watchdogs -dynamic_resources`,
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources": `listeners clusters -secrets`,
	"envoy.config.bootstrap.v3.Admin":                     `address access_log_path`,
	"envoy.config.core.v3.Address":                        `socket_address`,
	"envoy.config.core.v3.SocketAddress":                  `address port_value protocol`,
})

// supportedDynamic is what the server implements of dynamic_resources.
var supportedDynamic = config.NewSupport(map[string]string{
	"envoy.config.bootstrap.v3.Bootstrap.DynamicResources": `ads_config lds_config cds_config`,
	"envoy.config.core.v3.ApiConfigSource": `api_type transport_api_version grpc_services
		set_node_on_first_message_only`,
	"envoy.config.core.v3.GrpcService":           `envoy_grpc`,
	"envoy.config.core.v3.GrpcService.EnvoyGrpc": `cluster_name`,
	"envoy.config.core.v3.ConfigSource":          `ads initial_fetch_timeout resource_api_version`,
})
