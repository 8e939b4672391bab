package leastrequest

import (
	lrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/upstream"
	"google.golang.org/protobuf/types/known/anypb"
)

// Name is the extension's name.
const Name = "envoy.load_balancing_policies.least_request"

func init() {
	a, _ := anypb.New(&lrv3.LeastRequest{})
	config.Register(config.Extension{Kind: config.LoadBalancer, Name: Name, TypeURL: a.GetTypeUrl(), Factory: upstream.LBFactory(New)})
}
