package roundrobin

import (
	rrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/upstream"
	"google.golang.org/protobuf/types/known/anypb"
)

// Name is the extension's name.
const Name = "envoy.load_balancing_policies.round_robin"

func init() {
	a, _ := anypb.New(&rrv3.RoundRobin{})
	config.Register(config.Extension{Kind: config.LoadBalancer, Name: Name, TypeURL: a.GetTypeUrl(), Factory: upstream.LBFactory(New)})
}
