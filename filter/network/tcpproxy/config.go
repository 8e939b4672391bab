package tcpproxy

import (
	"fmt"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/stats"
)

// defaultIdleTimeout is Envoy's: an hour without bytes in either direction.
const defaultIdleTimeout = time.Hour

type weighted struct {
	name   string
	weight uint64
}

// Config is a built tcp_proxy.
type Config struct {
	bc          *filter.BuildContext
	clusters    []weighted
	totalWeight uint64
	idleTimeout time.Duration
	attempts    int
	stats       *Stats
	logs        accesslog.Loggers
}

// Stats are the filter's counters under tcp.<stat_prefix>.
type Stats struct {
	CxTotal, CxNoRoute, IdleTimeout, RxBytes, TxBytes, ConnectFail *stats.Counter
	CxActive                                                       *stats.Gauge
}

func build(bc *filter.BuildContext, m *tcpv3.TcpProxy) (*Config, error) {
	switch {
	case m.GetTunnelingConfig() != nil:
		return nil, config.At("tunneling_config", fmt.Errorf("not supported yet"))
	case m.GetOnDemand() != nil:
		return nil, config.At("on_demand", fmt.Errorf("not supported yet"))
	}
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	c := &Config{bc: bc, idleTimeout: defaultIdleTimeout, attempts: 1}
	if m.GetIdleTimeout() != nil {
		c.idleTimeout = m.GetIdleTimeout().AsDuration()
	}
	if v := m.GetMaxConnectAttempts(); v != nil {
		c.attempts = int(v.GetValue())
	}
	if name := m.GetCluster(); name != "" {
		c.clusters = []weighted{{name, 1}}
	}
	for _, wc := range m.GetWeightedClusters().GetClusters() {
		c.clusters = append(c.clusters, weighted{wc.GetName(), uint64(wc.GetWeight())})
	}
	for i, w := range c.clusters {
		c.totalWeight += w.weight
		// With CDS, the cluster is looked up per connection (as Envoy
		// does: downstream_cx_no_route while it is missing); a static
		// config has no way for it to appear.
		if !bc.Clusters.Dynamic() && !bc.Clusters.Known(w.name) {
			path := "cluster"
			if m.GetCluster() == "" {
				path = fmt.Sprintf("weighted_clusters.clusters[%d].name", i)
			}
			return nil, config.At(path, fmt.Errorf("cluster %q does not exist", w.name))
		}
	}
	var err error
	if c.logs, err = accesslog.Build(bc.AccessLogs, m.GetAccessLog()); err != nil {
		return nil, config.At("access_log", err)
	}
	if c.totalWeight == 0 {
		return nil, config.At("weighted_clusters", fmt.Errorf("total weight must be positive"))
	}
	sc := bc.Stats.Scope("tcp", "envoy_tcp_prefix", m.GetStatPrefix())
	c.stats = &Stats{
		CxTotal: sc.Counter("downstream_cx_total"), CxNoRoute: sc.Counter("downstream_cx_no_route"),
		IdleTimeout: sc.Counter("idle_timeout"), RxBytes: sc.Counter("downstream_cx_rx_bytes_total"),
		TxBytes: sc.Counter("downstream_cx_tx_bytes_total"), ConnectFail: sc.Counter("upstream_cx_connect_fail"),
		CxActive: sc.Gauge("downstream_cx_active"),
	}
	return c, nil
}

func (c *Config) pickCluster(r uint64) string {
	x := r % c.totalWeight
	for _, w := range c.clusters {
		if x < w.weight {
			return w.name
		}
		x -= w.weight
	}
	return c.clusters[len(c.clusters)-1].name
}
