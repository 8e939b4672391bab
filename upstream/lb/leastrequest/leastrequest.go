// Package leastrequest is the LEAST_REQUEST load balancer: the power of two
// choices over active requests, as Envoy does by default. It must not import
// other extensions.
package leastrequest

import (
	"github.com/straitproxy/strait/upstream"
)

// Balancer picks two hosts at random and sends to the one with fewer
// requests in flight. With unequal weights, a host's load is its active
// requests divided by its weight.
type Balancer struct{}

var _ upstream.LoadBalancer = Balancer{}

// New returns a balancer.
func New() upstream.LoadBalancer { return Balancer{} }

// Pick implements upstream.LoadBalancer.
func (Balancer) Pick(hs *upstream.HostSet, hint *upstream.PickHint) *upstream.Host {
	n := uint64(len(hs.Hosts))
	if n == 1 {
		return hs.Hosts[0]
	}
	r := hint.Random
	a := hs.Hosts[r%n]
	b := hs.Hosts[(r/n)%(n-1)]
	if b == a {
		b = hs.Hosts[n-1]
	}
	if hint.Avoid == a {
		return b
	}
	if hint.Avoid == b {
		return a
	}
	// a.Active/a.Weight < b.Active/b.Weight without division.
	if (a.Active.Load()+1)*int64(b.Weight) <= (b.Active.Load()+1)*int64(a.Weight) {
		return a
	}
	return b
}
