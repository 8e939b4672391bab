// Package ondemand is envoy.filters.http.on_demand: when no route matches
// a request and its route configuration has VHDS, the request waits while
// the virtual host of its host ("<route configuration>/<host>") is asked
// for, and is routed again once the server has answered (404 if the
// answer does not route it either).
//
// The filter holds no per-stream state and is not a link of the filter
// chain: the connection manager applies it at the routing step, because
// filters run before routing today. The wait ends at the answer, when the
// client leaves, or after the connection manager's request_timeout (15 s
// when it has none). On-demand cluster discovery (odcds) is refused.
package ondemand

import (
	"fmt"

	ondemandv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/on_demand/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.http.on_demand"

func init() {
	filter.RegisterHTTP(Name, &ondemandv3.OnDemand{}, func(_ *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		if m.(*ondemandv3.OnDemand).GetOdcds() != nil {
			return nil, config.At("odcds", fmt.Errorf("on-demand cluster discovery is not supported yet"))
		}
		return factory{}, nil
	})
}

type factory struct{}

// RoutesOnDemand implements filter.OnDemandRoutes.
func (factory) RoutesOnDemand() {}

// New implements filter.HTTPFactory; the connection manager never calls it
// (the filter acts at the routing step).
func (f factory) New() filter.StreamFilter { return f }
