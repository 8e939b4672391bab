package upstream

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
)

// An ORIGINAL_DST cluster has no endpoints of its own: each request goes
// to the address its downstream connection was originally sent to (the
// connection's local address, as the listener's original_dst filter
// restored it after an iptables REDIRECT), or, with
// original_dst_lb_config.use_http_header, to the IP:port in the
// request's x-envoy-original-dst-host (or http_header_name) header. A
// host is made for each address on first use and kept, with its
// connection pools, until a cleanup_interval (default 5 s) passes in
// which it was not chosen and it has nothing in flight, as in Envoy.

// defaultOriginalDstHeader is the header use_http_header reads when
// http_header_name is not set.
const defaultOriginalDstHeader = "x-envoy-original-dst-host"

type originalDst struct {
	c *Cluster
	// header is the header naming the destination ("" without
	// use_http_header); port, when set, replaces the destination's port
	// (upstream_port_override).
	header string
	port   uint16
	// hosts is the current address → host map, replaced whole as hosts
	// come and go (picks read it without a lock); mu serializes writers.
	hosts   atomic.Pointer[map[netip.AddrPort]*odHost]
	mu      sync.Mutex
	invalid *stats.Counter
	every   time.Duration // cleanup_interval
}

type odHost struct {
	h *Host
	// state is idle (not chosen since the last sweep), used, or dead (the
	// sweep took it out): a pick and the sweep agree on it by CAS, so a
	// host a pick returns is never one the sweep removes meanwhile.
	state atomic.Int32
}

const (
	odIdle int32 = iota
	odUsed
	odDead
)

// use marks e chosen; false when the sweep took it out.
func (e *odHost) use() bool {
	for {
		switch e.state.Load() {
		case odUsed:
			return true
		case odDead:
			return false
		}
		if e.state.CompareAndSwap(odIdle, odUsed) {
			return true
		}
	}
}

// buildOriginalDst configures an ORIGINAL_DST cluster.
func (c *Cluster) buildOriginalDst(cl *clusterv3.Cluster) error {
	if cl.GetLoadAssignment() != nil {
		return config.At("load_assignment", fmt.Errorf("an ORIGINAL_DST cluster takes its hosts from each request's original destination"))
	}
	od := &originalDst{c: c, invalid: c.statsScope.Counter("original_dst_host_invalid")}
	if lc := cl.GetOriginalDstLbConfig(); lc != nil {
		if lc.GetMetadataKey() != nil {
			return config.At("original_dst_lb_config.metadata_key", fmt.Errorf("not supported yet"))
		}
		if lc.GetUseHttpHeader() {
			od.header = defaultOriginalDstHeader
			if n := lc.GetHttpHeaderName(); n != "" {
				od.header = strings.ToLower(n)
			}
		}
		if p := lc.GetUpstreamPortOverride(); p != nil {
			if p.GetValue() == 0 || p.GetValue() > 65535 {
				return config.At("original_dst_lb_config.upstream_port_override", fmt.Errorf("%d is not a port", p.GetValue()))
			}
			od.port = uint16(p.GetValue())
		}
	}
	od.every = 5 * time.Second
	if d := cl.GetCleanupInterval(); d != nil {
		if od.every = d.AsDuration(); od.every <= 0 {
			return config.At("cleanup_interval", fmt.Errorf("must be positive"))
		}
	}
	od.hosts.Store(&map[netip.AddrPort]*odHost{})
	c.origDst = od
	c.setHosts(nil)
	return nil
}

// pick returns the host for the request's original destination: the
// header's when the cluster reads one and the request has a readable
// one, else the downstream connection's restored destination; nil
// without either (a connection whose destination no listener filter
// restored is never sent back to its own local address: that is this
// proxy).
func (od *originalDst) pick(hint *PickHint) *Host {
	if hint == nil {
		return nil
	}
	dst, ok := netip.AddrPort{}, false
	if od.header != "" && hint.Headers != nil {
		if v, has := hint.Headers.Get(od.header); has {
			ap, err := netip.ParseAddrPort(strings.TrimSpace(string(v)))
			if err != nil {
				od.invalid.Inc()
			} else {
				dst, ok = ap, true
			}
		}
	}
	if !ok {
		a, isTCP := hint.Local.(*net.TCPAddr)
		if !isTCP || a == nil {
			return nil
		}
		dst = a.AddrPort()
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if od.port != 0 {
		dst = netip.AddrPortFrom(dst.Addr(), od.port)
	}
	if e := (*od.hosts.Load())[dst]; e != nil && e.use() {
		return e.h
	}
	return od.add(dst)
}

// add makes the host for dst (or finds the one another request made).
func (od *originalDst) add(dst netip.AddrPort) *Host {
	od.mu.Lock()
	defer od.mu.Unlock()
	cur := *od.hosts.Load()
	if e := cur[dst]; e != nil && e.use() {
		return e.h
	}
	e := &odHost{h: od.c.newHost(dst.String(), 1, "", nil)}
	e.state.Store(odUsed)
	next := maps.Clone(cur)
	next[dst] = e
	od.install(next)
	return e.h
}

// install publishes the map and the cluster's host set (mu held).
func (od *originalDst) install(m map[netip.AddrPort]*odHost) {
	od.hosts.Store(&m)
	hosts := make([]*Host, 0, len(m))
	for _, e := range m {
		hosts = append(hosts, e.h)
	}
	od.c.setHosts(hosts)
}

// sweep removes, every interval, the hosts not chosen since the last
// sweep that have no request in flight; their pooled connections close
// (a tcp_proxy session's own connection lives on).
func (od *originalDst) sweep() {
	t := time.NewTicker(od.every)
	defer t.Stop()
	for {
		select {
		case <-od.c.stopped:
			return
		case <-t.C:
		}
		od.mu.Lock()
		cur := *od.hosts.Load()
		next := make(map[netip.AddrPort]*odHost, len(cur))
		for k, e := range cur {
			if e.h.Active.Load() > 0 || e.state.CompareAndSwap(odUsed, odIdle) || !e.state.CompareAndSwap(odIdle, odDead) {
				next[k] = e // in use (or chosen just now)
			}
		}
		if len(next) != len(cur) {
			od.install(next) // swapHosts closes the pools of those that left
		}
		od.mu.Unlock()
	}
}
