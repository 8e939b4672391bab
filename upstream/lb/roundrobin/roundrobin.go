// Package roundrobin is the ROUND_ROBIN load balancer: hosts in turn, or
// by smooth weighted round robin when weights differ. It must not import
// other extensions.
package roundrobin

import (
	"sync"
	"sync/atomic"

	"github.com/straitproxy/strait/upstream"
)

// Balancer is safe for concurrent use.
type Balancer struct {
	next atomic.Uint64
}

// wrr is smooth weighted round robin's credit per host of one host set.
type wrr struct {
	mu      sync.Mutex
	current []int64
}

var _ upstream.LoadBalancer = (*Balancer)(nil)

// New returns a balancer with no state.
func New() upstream.LoadBalancer { return &Balancer{} }

// Pick returns the next host. Equal weights take one atomic add; unequal
// weights use smooth weighted round robin (each pick adds every host's
// weight to its credit, takes the highest, and charges it the total).
func (b *Balancer) Pick(hs *upstream.HostSet, hint *upstream.PickHint) *upstream.Host {
	n := uint64(len(hs.Hosts))
	if !hs.Weighted {
		h := hs.Hosts[(b.next.Add(1)-1)%n]
		if hint != nil && h == hint.Avoid && n > 1 {
			h = hs.Hosts[(b.next.Add(1)-1)%n]
		}
		return h
	}
	st := hs.BalancerState(func() any { return &wrr{current: make([]int64, len(hs.Hosts))} }).(*wrr)
	st.mu.Lock()
	defer st.mu.Unlock()
	best := 0
	for i, w := range hs.Weights {
		st.current[i] += int64(w)
		if st.current[i] > st.current[best] {
			best = i
		}
	}
	st.current[best] -= int64(hs.TotalWeight)
	return hs.Hosts[best]
}
