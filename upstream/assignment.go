package upstream

import (
	"fmt"
	"net"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/straitproxy/strait/config"
)

// defaultOverprovisioning is Envoy's overprovisioning_factor default (1.4,
// given in percent).
const defaultOverprovisioning = 140

// loadScale is the resolution of priority load: parts per 10,000.
const loadScale = 10000

// epEntry is one endpoint of an assignment before it becomes a Host.
type epEntry struct {
	addr     string
	weight   uint32 // the endpoint's load_balancing_weight
	eff      uint32 // the weight balancers use (locality share folded in)
	hostname string
	// md is the endpoint's metadata (its transport socket match).
	md      *corev3.Metadata
	healthy bool
	flag    uint32 // the host's health flag (HealthFlags)
}

// localityScale is the resolution of folded locality weights: a
// priority's traffic is split in parts per million.
const localityScale = 1_000_000

// level is one priority of an assignment. excluded counts its DRAINING
// endpoints, which Envoy leaves out of a priority's health and panic
// shares.
type level struct {
	eps      []epEntry
	total    int
	healthy  int
	excluded int
}

// counted is the number of hosts a priority's health is a share of.
func (lv level) counted() int { return lv.total - lv.excluded }

// parseAssignment validates a ClusterLoadAssignment (from the cluster's
// load_assignment or from EDS) into priority levels. Endpoints whose
// health_status is UNHEALTHY or DRAINING are counted but never picked.
// With localityWeighted, a locality's load_balancing_weight is folded into
// its endpoints' weights: a locality gets its weight's share of the
// priority's traffic, scaled by the share of its endpoints that are
// healthy, and its endpoints split that share by their own weights. This
// is the traffic split of Envoy's two-stage locality pick, for every
// balancer that honours host weights.
func parseAssignment(cla *endpointv3.ClusterLoadAssignment, localityWeighted bool) ([]level, uint32, error) {
	factor := uint32(defaultOverprovisioning)
	if v := cla.GetPolicy().GetOverprovisioningFactor(); v != nil {
		factor = v.GetValue()
	}
	var levels []level
	// locs are each priority's localities, for locality weighting.
	type locality struct {
		eps, n int     // where its endpoints start in the level, how many
		eff    float64 // locality weight × availability
		sumW   uint64  // its healthy endpoints' weights
	}
	locs := map[int][]locality{}
	for i, le := range cla.GetEndpoints() {
		path := fmt.Sprintf("endpoints[%d]", i)
		p := int(le.GetPriority())
		if p > 127 {
			return nil, 0, config.At(path+".priority", fmt.Errorf("priority %d is above 127", p))
		}
		for len(levels) <= p {
			levels = append(levels, level{})
		}
		var eps []epEntry
		var sumW uint64
		healthy, excluded := 0, 0
		for j, lb := range le.GetLbEndpoints() {
			epath := fmt.Sprintf("%s.lb_endpoints[%d]", path, j)
			if lb.GetEndpointName() != "" {
				return nil, 0, config.At(epath+".endpoint_name", fmt.Errorf("named endpoints are not supported"))
			}
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, 0, config.At(epath+".endpoint.address", fmt.Errorf("a socket_address is required"))
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return nil, 0, config.At(epath+".endpoint.address.socket_address.protocol", fmt.Errorf("only TCP is supported"))
			}
			if _, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue); !ok {
				return nil, 0, config.At(epath+".endpoint.address.socket_address.port_value", fmt.Errorf("required"))
			}
			w := uint32(1)
			if v := lb.GetLoadBalancingWeight(); v != nil {
				w = v.GetValue()
			}
			hs := lb.GetHealthStatus()
			ok := hs != corev3.HealthStatus_UNHEALTHY && hs != corev3.HealthStatus_DRAINING && hs != corev3.HealthStatus_TIMEOUT
			flag := flagHealthy
			switch {
			case hs == corev3.HealthStatus_DRAINING:
				excluded++
				flag = flagDraining
			case !ok:
				flag = flagFailedEDS
			}
			if ok {
				healthy++
				sumW += uint64(w)
			}
			eps = append(eps, epEntry{addr: net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
				weight: w, hostname: lb.GetEndpoint().GetHostname(), md: lb.GetMetadata(), healthy: ok, flag: flag})
		}
		for k := range eps {
			eps[k].eff = eps[k].weight
		}
		if localityWeighted {
			lw := le.GetLoadBalancingWeight().GetValue()
			avail := 0.0
			if healthy > 0 {
				avail = min(1.0, float64(factor)/100*float64(healthy)/float64(len(eps)))
			}
			locs[p] = append(locs[p], locality{eps: len(levels[p].eps), n: len(eps), eff: float64(lw) * avail, sumW: sumW})
		}
		lv := &levels[p]
		lv.eps = append(lv.eps, eps...)
		lv.total += len(eps)
		lv.excluded += excluded
	}
	// A locality gets its weight's share of its priority's traffic, scaled
	// by its healthy share (Envoy gives a locality without weight or
	// without healthy hosts nothing); its hosts split that by weight.
	for p, ls := range locs {
		var total float64
		for _, l := range ls {
			total += l.eff
		}
		for _, l := range ls {
			for k := l.eps; k < l.eps+l.n; k++ {
				e := &levels[p].eps[k]
				if l.eff == 0 || total == 0 || !e.healthy {
					e.healthy = e.healthy && l.eff > 0
					continue
				}
				e.eff = uint32(max(1, l.eff/total*float64(e.weight)/float64(l.sumW)*localityScale+0.5))
			}
		}
	}
	for i := range levels {
		levels[i].healthy = 0
		for _, e := range levels[i].eps {
			if e.healthy {
				levels[i].healthy++
			}
		}
	}
	return levels, factor, nil
}

// priorityLoad spreads traffic over priorities as Envoy does: a priority's
// health is min(100%, factor × healthy/total); priority 0 takes its
// health's worth of traffic, the next priority takes the rest up to its
// own health, and so on. When the total health is below 100% the loads
// are scaled up so that they still add up to everything. The result is
// cumulative, in parts per loadScale.
func priorityLoad(levels []level, factor uint32) []uint32 {
	health := make([]uint64, len(levels))
	var sum uint64
	for i, lv := range levels {
		if lv.counted() > 0 {
			health[i] = min(loadScale, uint64(factor)*loadScale/100*uint64(lv.healthy)/uint64(lv.counted()))
		}
		sum += health[i]
	}
	cum := make([]uint32, len(levels))
	if sum == 0 {
		return cum
	}
	norm := min(loadScale, sum)
	var given uint64
	for i := range levels {
		share := min(loadScale-given, health[i]*loadScale/norm)
		given += share
		cum[i] = uint32(given)
	}
	// Rounding: the last priority with any health takes what is left.
	for i := len(levels) - 1; i >= 0; i-- {
		if health[i] > 0 {
			for j := i; j < len(levels); j++ {
				cum[j] = loadScale
			}
			break
		}
	}
	return cum
}

// defaultPanicThreshold is Envoy's healthy_panic_threshold default.
const defaultPanicThreshold = 50

// panicLevels says which priorities are in panic, as Envoy decides: none
// while the total health (the priorities' health summed, capped at 100%)
// is 100%, or when the threshold is 0; otherwise each priority whose
// healthy share of its hosts (DRAINING ones left out) is below the
// threshold (an empty one too).
// total: every priority is.
func panicLevels(levels []level, factor uint32, threshold float64) (panics []bool, total bool) {
	panics = make([]bool, len(levels))
	if threshold <= 0 || len(levels) == 0 {
		return panics, false
	}
	var sum uint64
	for _, lv := range levels {
		if lv.counted() > 0 {
			sum += min(100, uint64(factor)*uint64(lv.healthy)/uint64(lv.counted()))
		}
	}
	if sum >= 100 {
		return panics, false
	}
	total = true
	for i, lv := range levels {
		share := 0.0
		if lv.counted() > 0 {
			share = 100 * float64(lv.healthy) / float64(lv.counted())
		}
		panics[i] = share < threshold
		total = total && panics[i]
	}
	return panics, total
}

// panicLoad spreads traffic when every priority is in panic: by each
// priority's number of hosts, healthy or not (the rounding remainder to
// the first that has any). Cumulative, in parts per loadScale.
func panicLoad(levels []level) []uint32 {
	cum := make([]uint32, len(levels))
	var hosts uint64
	for _, lv := range levels {
		hosts += uint64(lv.total)
	}
	if hosts == 0 {
		return cum
	}
	share := make([]uint64, len(levels))
	left, first := uint64(loadScale), -1
	for i, lv := range levels {
		share[i] = uint64(lv.total) * loadScale / hosts
		left -= share[i]
		if first < 0 && lv.total > 0 {
			first = i
		}
	}
	share[first] += left
	var given uint64
	for i := range levels {
		given += share[i]
		cum[i] = uint32(given)
	}
	return cum
}

// assign turns parsed levels into a host set, reusing the hosts (and so
// the pooled connections, counters and outlier state) of endpoints that
// are unchanged. A priority in panic picks among all its hosts, by their
// own weights. Hosts that outlier detection ejected count as unhealthy.
func (c *Cluster) assign(levels []level, factor uint32) {
	c.assignMu.Lock()
	defer c.assignMu.Unlock()
	c.src = hostSource{levels: levels, factor: factor}
	c.assignLocked(levels, factor)
}

func (c *Cluster) assignLocked(levels []level, factor uint32) {
	old := map[string]*Host{}
	if hs := c.hosts.Load(); hs != nil {
		for _, h := range hs.All {
			old[h.Addr] = h
		}
	}
	// The hosts first, and each priority's health without the ejected.
	hosts := make([][]*Host, len(levels))
	adj, copied := levels, false
	for i, lv := range levels {
		hosts[i] = make([]*Host, len(lv.eps))
		for j, e := range lv.eps {
			h := old[e.addr]
			sock := c.socketFor(e.md)
			switch {
			case h == nil || h.Hostname != e.hostname || h.sock != sock:
				h = c.newHost(e.addr, e.weight, e.hostname, sock)
			case h.Weight() != e.weight:
				h.weight.Store(e.weight) // the set built below carries it
			}
			delete(old, e.addr) // a duplicate address gets its own host
			hosts[i][j] = h
			if e.healthy && h.od.ejected.Load() {
				if !copied {
					adj, copied = append([]level(nil), levels...), true
				}
				adj[i].healthy--
			}
		}
	}
	panics, totalPanic := panicLevels(adj, factor, c.panicThreshold)
	var all, pickAll []*Host
	var pickAllW []uint32
	var sets []*HostSet
	healthy := 0
	for i, lv := range adj {
		var pick []*Host
		var w []uint32
		for j, e := range lv.eps {
			h := hosts[i][j]
			h.healthFlag.Store(e.flag)
			all = append(all, h)
			switch {
			case panics[i]:
				pick, w = append(pick, h), append(w, e.weight)
			case e.healthy && !h.od.ejected.Load():
				pick, w = append(pick, h), append(w, e.eff)
			}
		}
		set := newWeightedSet(pick, w)
		set.panic, set.healthy = panics[i], lv.healthy
		healthy += lv.healthy
		sets = append(sets, set)
		pickAll, pickAllW = append(pickAll, pick...), append(pickAllW, w...)
	}
	var hs *HostSet
	switch {
	case len(sets) == 1:
		hs = sets[0]
	default:
		hs = newWeightedSet(pickAll, pickAllW)
		hs.healthy = healthy
		if len(sets) > 1 {
			hs.levels = sets
			hs.load = priorityLoad(adj, factor)
			if totalPanic {
				hs.load = panicLoad(adj)
			}
		}
	}
	hs.All = all
	c.swapHosts(hs)
}

// hostSource is what the cluster's host set was last built from: an
// assignment's levels, or (DNS) a list of hosts.
type hostSource struct {
	levels []level
	factor uint32
	plain  []*Host
	isList bool
}

// setHosts installs a DNS cluster's hosts (one priority, all healthy but
// for outlier ejections).
func (c *Cluster) setHosts(hosts []*Host) {
	c.assignMu.Lock()
	defer c.assignMu.Unlock()
	c.src = hostSource{plain: hosts, isList: true}
	c.setHostsLocked(hosts)
}

func (c *Cluster) setHostsLocked(hosts []*Host) {
	out := 0
	for _, h := range hosts {
		if h.od.ejected.Load() {
			out++
		}
	}
	if out == 0 {
		c.swapHosts(newHostSet(hosts))
		return
	}
	pick := make([]*Host, 0, len(hosts)-out)
	for _, h := range hosts {
		if !h.od.ejected.Load() {
			pick = append(pick, h)
		}
	}
	panics, _ := panicLevels([]level{{total: len(hosts), healthy: len(pick)}}, defaultOverprovisioning, c.panicThreshold)
	hs := newHostSet(pick)
	if panics[0] {
		hs = newHostSet(hosts)
		hs.panic = true
	}
	hs.healthy = len(pick)
	hs.All = hosts
	c.swapHosts(hs)
}

// rebuildHosts builds the host set again from its last source: outlier
// detection ejected or returned a host.
func (c *Cluster) rebuildHosts() {
	c.assignMu.Lock()
	defer c.assignMu.Unlock()
	if c.src.isList {
		c.setHostsLocked(c.src.plain)
	} else {
		c.assignLocked(c.src.levels, c.src.factor)
	}
}

// localityWeighted reports whether the cluster asks for locality weights.
func localityWeighted(cl *clusterv3.Cluster) bool {
	return cl.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
}

// Assignment is a validated ClusterLoadAssignment, ready to apply.
type Assignment struct {
	levels []level
	factor uint32
}

// PrepareAssignment validates an EDS ClusterLoadAssignment for this
// cluster without applying it (an update applies only when every cluster
// it names accepts it).
func (c *Cluster) PrepareAssignment(cla *endpointv3.ClusterLoadAssignment) (*Assignment, error) {
	if errs := config.ValidationErrors(cla.ValidateAll()); len(errs) > 0 {
		return nil, config.Join(errs)
	}
	if err := supported.Check(cla); err != nil {
		return nil, err
	}
	levels, factor, err := parseAssignment(cla, c.localityWeighted)
	if err != nil {
		return nil, err
	}
	return &Assignment{levels: levels, factor: factor}, nil
}

// ApplyAssignment swaps a prepared assignment in. Requests already holding
// a host finish on it; hosts that left close their idle connections. The
// new set is built before the swap, so requests never wait for it.
func (c *Cluster) ApplyAssignment(a *Assignment) {
	c.assign(a.levels, a.factor)
	c.endpointsSet.Store(true)
}

// HasEndpoints reports whether an EDS cluster has received its first
// assignment (always true for other clusters).
func (c *Cluster) HasEndpoints() bool { return c.EDSName == "" || c.endpointsSet.Load() }
