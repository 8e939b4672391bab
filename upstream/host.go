package upstream

import (
	"sync/atomic"
)

// Host is one upstream endpoint. Its counters are plain atomics read by the
// admin /clusters page and by the least-request balancer.
type Host struct {
	// Addr is "ip:port" (or "name:port" before resolution).
	Addr   string
	Weight uint32
	// Hostname is what auto_host_rewrite sends as the Host: the endpoint's
	// hostname field, else the DNS name it was resolved from (empty for a
	// STATIC endpoint without one).
	Hostname string

	cluster *Cluster
	pool    *Pool
	mux     *MuxPool // nil unless the cluster may speak a multiplexed protocol

	// Active is the number of requests in flight to this host.
	Active     atomic.Int64
	RqTotal    atomic.Uint64
	RqError    atomic.Uint64
	CxActive   atomic.Int64
	CxTotal    atomic.Uint64
	CxFail     atomic.Uint64
	RqTimeout  atomic.Uint64
	RqSuccess  atomic.Uint64
	removed    atomic.Bool
	healthFlag atomic.Uint32
}

// Cluster returns the cluster that owns h.
func (h *Host) Cluster() *Cluster { return h.cluster }

// Pool returns h's connection pool for one-request-at-a-time protocols.
func (h *Host) Pool() *Pool { return h.pool }

// closePools closes the host's connections as it leaves its cluster.
func (h *Host) closePools() {
	h.pool.Close()
	if h.mux != nil {
		h.mux.Close()
	}
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
	// TotalWeight is the sum of the hosts' weights.
	TotalWeight uint64
	// Weighted reports whether any host's weight differs from the others.
	Weighted bool

	// levels are the priorities when there is more than one; load is the
	// cumulative share of traffic of each, in parts per loadScale.
	levels []*HostSet
	load   []uint32
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
	hs := &HostSet{Hosts: hosts, All: hosts}
	for i, h := range hosts {
		hs.TotalWeight += uint64(h.Weight)
		if i > 0 && h.Weight != hosts[0].Weight {
			hs.Weighted = true
		}
	}
	return hs
}

// LoadBalancer picks a host for a request. Implementations are safe for
// concurrent use and do not allocate per pick.
type LoadBalancer interface {
	Pick(hs *HostSet, hint *PickHint) *Host
}

// PickHint carries what a balancer may use: a random number drawn per
// request and hosts to avoid on a retry.
type PickHint struct {
	Random uint64
	Avoid  *Host
}

// LBFactory makes a balancer for one cluster; the registry holds these.
type LBFactory func() LoadBalancer
