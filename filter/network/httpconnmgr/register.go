package httpconnmgr

import (
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/proxy"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = proxy.FilterName

func init() {
	filter.RegisterNetwork(Name, &hcmv3.HttpConnectionManager{}, func(bc *filter.BuildContext, m proto.Message) (filter.NetworkFactory, error) {
		cfg, err := build(bc, m.(*hcmv3.HttpConnectionManager))
		if err != nil {
			return nil, err
		}
		return &Factory{cfg: cfg}, nil
	})
}
