// Package random is the RANDOM load balancer: a uniformly random host, or
// one drawn in proportion to weight. It must not import other extensions.
package random

import (
	"github.com/straitproxy/strait/upstream"
)

// Balancer is stateless.
type Balancer struct{}

var _ upstream.LoadBalancer = Balancer{}

// New returns a balancer.
func New() upstream.LoadBalancer { return Balancer{} }

// Pick implements upstream.LoadBalancer using the request's random number.
func (Balancer) Pick(hs *upstream.HostSet, hint *upstream.PickHint) *upstream.Host {
	n := uint64(len(hs.Hosts))
	if !hs.Weighted || hs.TotalWeight == 0 {
		h := hs.Hosts[hint.Random%n]
		if h == hint.Avoid && n > 1 {
			h = hs.Hosts[(hint.Random+1)%n]
		}
		return h
	}
	return hs.Hosts[hs.PickByWeight(hint.Random%hs.TotalWeight)]
}
