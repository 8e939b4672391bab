package tcpproxy

import "github.com/straitproxy/strait/config"

// supported is what build implements of TcpProxy.
var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": `stat_prefix cluster
		weighted_clusters idle_timeout max_connect_attempts access_log`,
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster":               `clusters`,
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": `name weight`,
})
