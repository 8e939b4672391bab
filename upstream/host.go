package upstream

import (
	"net"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/straitproxy/strait/protocol"
)

// Host is one upstream endpoint. Its counters are plain atomics read by the
// admin /clusters page and by the least-request balancer.
type Host struct {
	// Addr is "ip:port" (or "name:port" before resolution).
	Addr string
	// Hostname is what auto_host_rewrite sends as the Host: the endpoint's
	// hostname field, else the DNS name it was resolved from (empty for a
	// STATIC endpoint without one).
	Hostname string

	cluster *Cluster
	// sock is the transport socket of its connections.
	sock *hostSocket
	pool *Pool
	mux  *MuxPool // nil unless the cluster may speak a multiplexed protocol
	// muxes are the pools of protocols a network filter chose (Dubbo):
	// one per protocol name, made on first use.
	muxMu sync.Mutex
	muxes map[string]*MuxPool
	// alts are the pools of ALPN overrides (PoolsFor), under muxMu.
	alts map[string]*altPools

	// Active is the number of requests in flight to this host.
	Active    atomic.Int64
	RqTotal   atomic.Uint64
	RqError   atomic.Uint64
	CxActive  atomic.Int64
	CxTotal   atomic.Uint64
	CxFail    atomic.Uint64
	RqTimeout atomic.Uint64
	RqSuccess atomic.Uint64
	removed   atomic.Bool
	// proto is what ALPN chose for this host (auto_config).
	proto atomic.Int32
	// healthFlag is what its assignment says of its health.
	healthFlag atomic.Uint32
	// od is its outlier detection state (outlier.go).
	od hostMonitor
	// weight is its endpoint's load_balancing_weight. An assignment that
	// changes only the weight updates it in place, as Envoy does: the
	// host keeps its connections, counters and outlier state.
	weight atomic.Uint32
}

// Weight is the host's endpoint weight (the admin /clusters page; the
// balancers read their HostSet's Weights, which fold in locality and
// health).
func (h *Host) Weight() uint32 { return h.weight.Load() }

// The health flags of a host.
const (
	flagHealthy uint32 = iota
	flagFailedEDS
	flagDraining
)

// HealthFlags is Envoy's health_flags for the admin /clusters page:
// "healthy", or the flags that make it not: "/failed_outlier_check"
// (ejected by outlier detection), "/failed_eds_health" (UNHEALTHY or
// TIMEOUT in its assignment), "/eds_status_draining".
func (h *Host) HealthFlags() string {
	f := ""
	if h.od.ejected.Load() {
		f = "/failed_outlier_check"
	}
	switch h.healthFlag.Load() {
	case flagFailedEDS:
		f += "/failed_eds_health"
	case flagDraining:
		f += "/eds_status_draining"
	}
	if f == "" {
		return "healthy"
	}
	return f
}

// Cluster returns the cluster that owns h.
func (h *Host) Cluster() *Cluster { return h.cluster }

// The protocols auto_config learns per host.
const (
	protoUnknown = iota
	protoHTTP1
	protoH2
)

// Pool returns h's connection pool for one-request-at-a-time protocols.
func (h *Host) Pool() *Pool { return h.pool }

// closePools closes the host's connections as it leaves its cluster.
func (h *Host) closePools() {
	h.pool.Close()
	if h.mux != nil {
		h.mux.Close()
	}
	h.muxMu.Lock()
	for _, p := range h.muxes {
		p.Close()
	}
	h.muxes = nil
	for _, a := range h.alts {
		a.pool.Close()
		if a.mux != nil {
			a.mux.Close()
		}
	}
	h.alts = nil
	h.muxMu.Unlock()
}

// MuxFor returns h's pool of multiplexed connections speaking codec, a
// protocol the cluster does not name (an RPC protocol its network filter
// speaks). Pools are kept by protocol name; a host that left its cluster
// gets a closed pool.
func (h *Host) MuxFor(codec *protocol.Codec) *MuxPool {
	h.muxMu.Lock()
	defer h.muxMu.Unlock()
	if p := h.muxes[codec.Name]; p != nil {
		return p
	}
	p := newMuxPool(h, codec, h.cluster.RPC, nil)
	if h.removed.Load() {
		p.closed = true
		return p
	}
	if h.muxes == nil {
		h.muxes = map[string]*MuxPool{}
	}
	h.muxes[codec.Name] = p
	return p
}

// Mux returns h's pool of multiplexed connections.
func (h *Host) Mux() *MuxPool { return h.mux }

// HostSet is an immutable snapshot of a cluster's hosts; a new set is
// swapped in whole when membership changes.
type HostSet struct {
	// Hosts are the hosts that may be picked (every priority).
	Hosts []*Host
	// All adds the hosts that are excluded by their health status.
	All []*Host
	// Weights are the hosts' effective weights, by index in Hosts: the
	// endpoint's weight, or with locality weighting the locality's share
	// folded in. Balancers read these, not Host.Weight.
	Weights []uint32
	// TotalWeight is the sum of Weights.
	TotalWeight uint64
	// Weighted reports whether any host's weight differs from the others.
	Weighted bool

	cum     []uint64 // cumulative Weights, for PickByWeight
	lbOnce  sync.Once
	lbState any

	// levels are the priorities when there is more than one; load is the
	// cumulative share of traffic of each, in parts per loadScale.
	levels []*HostSet
	load   []uint32
	// panic: too few hosts are healthy, so Hosts are all of them, healthy
	// or not (Envoy's panic threshold); healthy counts the healthy ones.
	panic   bool
	healthy int
}

// pickLevel chooses the priority for one request from its random number.
func (hs *HostSet) pickLevel(r uint64) *HostSet {
	if hs.levels == nil {
		return hs
	}
	x := uint32((r >> 40) % loadScale)
	for i, cum := range hs.load {
		if x < cum && len(hs.levels[i].Hosts) > 0 {
			return hs.levels[i]
		}
	}
	return hs
}

func newHostSet(hosts []*Host) *HostSet {
	w := make([]uint32, len(hosts))
	for i, h := range hosts {
		w[i] = h.Weight()
	}
	return newWeightedSet(hosts, w)
}

func newWeightedSet(hosts []*Host, weights []uint32) *HostSet {
	hs := &HostSet{Hosts: hosts, All: hosts, Weights: weights, healthy: len(hosts)}
	for i, w := range weights {
		hs.TotalWeight += uint64(w)
		if i > 0 && w != weights[0] {
			hs.Weighted = true
		}
	}
	if hs.Weighted {
		hs.cum = make([]uint64, len(weights))
		var sum uint64
		for i, w := range weights {
			sum += uint64(w)
			hs.cum[i] = sum
		}
	}
	return hs
}

// PickByWeight returns the index of the host that owns point x of
// [0, TotalWeight) (a binary search: weighted picks stay cheap with
// thousands of hosts).
func (hs *HostSet) PickByWeight(x uint64) int {
	if hs.cum == nil {
		return int(x % uint64(len(hs.Hosts)))
	}
	return sort.Search(len(hs.cum), func(i int) bool { return hs.cum[i] > x })
}

// BalancerState returns the balancer's state for this set, made by init
// on first use. A set belongs to one cluster and so to one balancer; each
// priority level is its own set, so per-set state survives picks that
// alternate between levels.
func (hs *HostSet) BalancerState(init func() any) any {
	hs.lbOnce.Do(func() { hs.lbState = init() })
	return hs.lbState
}

// LoadBalancer picks a host for a request. Implementations are safe for
// concurrent use and do not allocate per pick.
type LoadBalancer interface {
	Pick(hs *HostSet, hint *PickHint) *Host
}

// PickHint carries what a balancer may use: a random number drawn per
// request and hosts to avoid on a retry; and, for an ORIGINAL_DST
// cluster, the downstream connection's original destination (its local
// address once a listener filter restored it; nil when none did) and
// the request's headers (nil for a TCP connection).
type PickHint struct {
	Random  uint64
	Avoid   *Host
	Local   net.Addr
	Headers *protocol.Headers
}

// LBFactory makes a balancer for one cluster; the registry holds these.
type LBFactory func() LoadBalancer
