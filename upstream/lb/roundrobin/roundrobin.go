// Package roundrobin is the ROUND_ROBIN load balancer: hosts in turn, or
// by weight when weights differ (smooth weighted round robin for small
// sets, earliest deadline first for large ones, as Envoy does). It must
// not import other extensions.
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

// smallSet is the largest weighted set picked by smooth weighted round
// robin, which costs a pass over the set per pick; larger sets (EDS
// clusters with thousands of endpoints) use an EDF heap, O(log n).
const smallSet = 64

// wrr is the weighted state of one host set: smooth weighted round
// robin's credit per host, or the EDF heap.
type wrr struct {
	mu      sync.Mutex
	current []int64
	heap    []edfEntry
}

// edfEntry: host i is next due at deadline; each pick advances the
// picked host's deadline by 1/weight.
type edfEntry struct {
	deadline float64
	i        int32
}

func newWRR(hs *upstream.HostSet) *wrr {
	st := &wrr{}
	if len(hs.Hosts) <= smallSet {
		st.current = make([]int64, len(hs.Hosts))
		return st
	}
	st.heap = make([]edfEntry, len(hs.Hosts))
	for i, w := range hs.Weights {
		st.heap[i] = edfEntry{deadline: 1 / float64(max(w, 1)), i: int32(i)}
	}
	for i := len(st.heap)/2 - 1; i >= 0; i-- {
		st.down(i)
	}
	return st
}

func (e edfEntry) before(o edfEntry) bool {
	return e.deadline < o.deadline || (e.deadline == o.deadline && e.i < o.i)
}

func (st *wrr) down(i int) {
	h := st.heap
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].before(h[l]) {
			m = r
		}
		if !h[m].before(h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
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
	st := hs.BalancerState(func() any { return newWRR(hs) }).(*wrr)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.heap != nil {
		top := &st.heap[0]
		i := top.i
		top.deadline += 1 / float64(max(hs.Weights[i], 1))
		st.down(0)
		return hs.Hosts[i]
	}
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
