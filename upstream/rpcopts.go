package upstream

import (
	"errors"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/protocol"
)

// rpcOptions reads a cluster's framed-RPC settings, which Envoy's Cluster
// has no field for:
//
//	metadata: { filter_metadata: { strait: { rpc_max_body_bytes: 16777216, rpc_heartbeat_interval: 10s } } }
//
// Other metadata is data for filters and is left alone; an unknown key
// under strait is refused.
func rpcOptions(cl *clusterv3.Cluster) (protocol.MuxOptions, error) {
	var o protocol.MuxOptions
	md, ok := cl.GetMetadata().GetFilterMetadata()["strait"]
	if !ok {
		return o, nil
	}
	for key, v := range md.GetFields() {
		path := "metadata.filter_metadata.strait." + key
		switch key {
		case "rpc_max_body_bytes":
			n, err := config.RPCBodyLimit(v)
			if err != nil {
				return o, config.At(path, err)
			}
			o.MaxBody = n
		case "rpc_heartbeat_interval":
			d, err := time.ParseDuration(v.GetStringValue())
			if err != nil || d < 0 {
				return o, config.At(path, errors.New(`a duration such as "30s" ("0s": no heartbeats)`))
			}
			if d == 0 {
				d = -1
			} else if d < 100*time.Millisecond {
				return o, config.At(path, errors.New("at least 100ms"))
			}
			o.Heartbeat = d
		default:
			return o, config.At(path, errors.New("unknown key (supported: rpc_max_body_bytes, rpc_heartbeat_interval)"))
		}
	}
	return o, nil
}
