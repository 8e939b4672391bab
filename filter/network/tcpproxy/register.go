package tcpproxy

import (
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/straitproxy/strait/filter"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.network.tcp_proxy"

func init() {
	filter.RegisterNetwork(Name, &tcpv3.TcpProxy{}, func(bc *filter.BuildContext, m proto.Message) (filter.NetworkFactory, error) {
		cfg, err := build(bc, m.(*tcpv3.TcpProxy))
		if err != nil {
			return nil, err
		}
		return &Factory{cfg: cfg}, nil
	})
}
