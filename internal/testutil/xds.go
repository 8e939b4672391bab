package testutil

import (
	"fmt"
	"net"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	// The typed configs the resources carry.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// The xDS resources the end-to-end tests and bench/xds push: one HTTP
// listener on RDS, a route to one cluster, EDS clusters and their
// endpoints. Their JSON is fixed here, so a mistake in it panics.

func fromJSON[T proto.Message](m T, js string) T {
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		panic(fmt.Sprintf("%v\n%s", err, js))
	}
	return m
}

// XDSListener is an HTTP listener on addr whose connection manager (stat
// prefix name) takes the route configuration route from ADS;
// fetchTimeout, if set, is its initial_fetch_timeout.
func XDSListener(name, addr, route, fetchTimeout string) *listenerv3.Listener {
	host, port, _ := net.SplitHostPort(addr)
	ift := ""
	if fetchTimeout != "" {
		ift = `,"initial_fetch_timeout":"` + fetchTimeout + `"`
	}
	return fromJSON(&listenerv3.Listener{}, `{"name":"`+name+`","address":{"socket_address":{"address":"`+host+`","port_value":`+port+`}},
	  "filter_chains":[{"filters":[{"name":"hcm","typed_config":{
	    "@type":"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	    "stat_prefix":"`+name+`","rds":{"route_config_name":"`+route+`","config_source":{"ads":{},"resource_api_version":"V3"`+ift+`}},
	    "http_filters":[{"name":"envoy.filters.http.router","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}`)
}

// XDSRoute routes everything to cluster (3 s timeout); extra is JSON of
// routes put first, each followed by a comma.
func XDSRoute(name, cluster, extra string) *routev3.RouteConfiguration {
	return fromJSON(&routev3.RouteConfiguration{}, `{"name":"`+name+`","virtual_hosts":[{"name":"all","domains":["*"],"routes":[`+extra+
		`{"match":{"prefix":"/"},"route":{"cluster":"`+cluster+`","timeout":"3s"}}]}]}`)
}

// XDSCluster is an EDS cluster taking its endpoints from ADS.
func XDSCluster(name string) *clusterv3.Cluster {
	return fromJSON(&clusterv3.Cluster{}, `{"name":"`+name+`","type":"EDS","connect_timeout":"1s",
	  "eds_cluster_config":{"eds_config":{"ads":{},"resource_api_version":"V3"}}}`)
}

// XDSEndpoints is cluster's assignment: addrs ("ip:port") at priority 0.
func XDSEndpoints(cluster string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var eps []string
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		eps = append(eps, `{"endpoint":{"address":{"socket_address":{"address":"`+host+`","port_value":`+port+`}}}}`)
	}
	return fromJSON(&endpointv3.ClusterLoadAssignment{}, `{"cluster_name":"`+cluster+`","endpoints":[{"lb_endpoints":[`+strings.Join(eps, ",")+`]}]}`)
}

// XDSBootstrap is a Strait bootstrap driven by the ADS server at cpAddr
// (CDS and LDS), as node id, with admin on adminAddr.
func XDSBootstrap(node, cpAddr, adminAddr string, delta bool) string {
	api := "GRPC"
	if delta {
		api = "DELTA_GRPC"
	}
	host, port, _ := net.SplitHostPort(cpAddr)
	ahost, aport, _ := net.SplitHostPort(adminAddr)
	return `
node: { id: ` + node + `, cluster: test }
admin: { address: { socket_address: { address: ` + ahost + `, port_value: ` + aport + ` } } }
dynamic_resources:
  ads_config:
    api_type: ` + api + `
    transport_api_version: V3
    grpc_services: [ { envoy_grpc: { cluster_name: xds_cluster } } ]
  cds_config: { ads: {}, resource_api_version: V3 }
  lds_config: { ads: {}, resource_api_version: V3 }
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: xds_cluster
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: ` + host + `, port_value: ` + port + ` } } } } ] } ]
`
}
