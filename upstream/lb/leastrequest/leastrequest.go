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
	ai, bi := r%n, (r/n)%(n-1)
	if bi == ai {
		bi = n - 1
	}
	a, b := hs.Hosts[ai], hs.Hosts[bi]
	if hint.Avoid == a {
		return b
	}
	if hint.Avoid == b {
		return a
	}
	// a.Active/a.Weight < b.Active/b.Weight without division.
	if (a.Active.Load()+1)*int64(hs.Weights[bi]) <= (b.Active.Load()+1)*int64(hs.Weights[ai]) {
		return a
	}
	return b
}
