package upstream

import (
	"fmt"
	"net"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Upstream network filters (a cluster's filters): each new connection to
// a host, once its transport socket (TLS) is up, passes the cluster's
// filters in order. A filter may wrap the connection (speak a preamble and
// take the peer's, as Istio's metadata exchange does) or refuse it. A new
// filter is a folder of its own that registers here.

// ConnFilter is a built upstream network filter, shared by the cluster's
// connections.
type ConnFilter interface {
	// Connected sees a connection just made to h and returns the one the
	// pool keeps (c, or c wrapped); an error fails the connection.
	Connected(h *Host, c net.Conn) (net.Conn, error)
}

// ConnFilterEnv is what building one may use.
type ConnFilterEnv struct {
	// Stats is the cluster's scope (cluster.<stat name>.).
	Stats *stats.Scope
	// Node is this proxy's node.
	Node *corev3.Node
}

// ConnFilterBuilder builds an upstream network filter from its decoded,
// validated config (a *structpb.Struct for a TypedStruct config).
type ConnFilterBuilder func(env ConnFilterEnv, cfg proto.Message) (ConnFilter, error)

// RegisterConnFilter registers an upstream network filter by name and the
// type URL of its config.
func RegisterConnFilter(name, typeURL string, b ConnFilterBuilder) {
	config.Register(config.Extension{Kind: config.UpstreamNetworkFilter, Name: name, TypeURL: typeURL, Factory: b})
}

// buildConnFilters builds cl's filters into c.
func (c *Cluster) buildConnFilters(cl *clusterv3.Cluster, env Env) error {
	for i, f := range cl.GetFilters() {
		path := fmt.Sprintf("filters[%d]", i)
		if f.GetTypedConfig() == nil {
			return config.At(path+".typed_config", fmt.Errorf("required"))
		}
		ext, msg, err := config.DecodeValue(config.UpstreamNetworkFilter, f.GetTypedConfig())
		if err != nil {
			return config.At(path+".typed_config", err)
		}
		cf, err := ext.Factory.(ConnFilterBuilder)(ConnFilterEnv{Stats: c.statsScope, Node: env.Node}, msg)
		if err != nil {
			return config.At(path+".typed_config", err)
		}
		c.connFilters = append(c.connFilters, cf)
	}
	return nil
}

// filterConn passes a new connection through the cluster's filters.
func (h *Host) filterConn(c net.Conn) (net.Conn, error) {
	for _, f := range h.cluster.connFilters {
		var err error
		if c, err = f.Connected(h, c); err != nil {
			return nil, err
		}
	}
	return c, nil
}
