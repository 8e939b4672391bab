package server

import "github.com/straitproxy/strait/config"

// supported is what the server implements of the Bootstrap itself; the
// listeners, clusters and extensions check their own parts.
var supported = config.NewSupport(map[string]string{
	"envoy.config.bootstrap.v3.Bootstrap": `static_resources admin
		-node -layered_runtime -watchdogs -dynamic_resources`,
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources": `listeners clusters -secrets`,
	"envoy.config.bootstrap.v3.Admin":                     `address`,
	"envoy.config.core.v3.Address":                        `socket_address`,
	"envoy.config.core.v3.SocketAddress":                  `address port_value protocol`,
})
