package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/warmup"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
)

// Clusters is the cluster manager: the bootstrap's static clusters and
// the ones CDS delivers, their warming, and the EDS assignments they
// take. Requests read the current set without a lock (Get); updates
// build under mu and swap in a new immutable Manager.
//
// Updates are per resource, as Envoy applies them: a cluster that fails
// to build is refused (its error is returned by name) and its serving
// version, if any, stays; the rest of the update applies. A new or
// changed cluster warms before it serves: an EDS cluster until its first
// assignment (or its eds_config initial_fetch_timeout), a DNS cluster
// until its first lookup (5 s at most), and either until its TLS secrets
// came (or their initial_fetch_timeout passed). The version it replaces
// serves until then.
type Clusters struct {
	cur    atomic.Pointer[Manager]
	static map[string]*Cluster
	scope  *stats.Scope
	log    *slog.Logger
	o      ClustersOptions

	mu      sync.Mutex
	active  map[string]*dynCluster
	warming map[string]*dynCluster
	cla     map[string]*config.Resource
	claGone map[string]bool // assignments whose initial fetch timed out
	retired []*Cluster
	// forgets are stopped clusters whose stats go at the end of changed()
	// unless a cluster then serving or warming uses their stat name.
	forgets []*Cluster
	// lingering are clusters CDS removed while routes still named them:
	// they serve until no route does, or their timer ends them.
	lingering map[string]*dynCluster
	// changedCh is closed (and replaced) when the serving set changes.
	changedCh chan struct{}
	eds       config.Watches // EDS names by source
	init      warmup.Latch
	stopped   bool
}

// ClustersOptions are the cluster manager's links to the xDS client.
type ClustersOptions struct {
	// CDS: clusters come from CDS too, so a name not known yet may still
	// arrive (Dynamic).
	CDS bool
	// WatchEndpoints sets the EDS names the clusters wait for from one
	// config source (nil names: none any more). It is called with the
	// manager's lock held, so calls come in order; it must not call back
	// into the manager.
	WatchEndpoints func(src *corev3.ConfigSource, names []string)
	// CheckSource refuses an eds_config this process cannot subscribe
	// to (nil: only ADS).
	CheckSource func(src *corev3.ConfigSource) error
	// Initialized is called once, without the lock, when the first CDS
	// update's clusters are warm (or their warming timed out).
	Initialized func()
	// Linger bounds how long a removed cluster that routes still name
	// keeps serving (0: it goes at once).
	Linger time.Duration
	// Secrets is the secret store transport sockets name secrets from.
	Secrets transport.SecretSource
	// Node is this proxy's node.
	Node *corev3.Node
}

type dynCluster struct {
	res   *config.Resource
	c     *Cluster
	timer *time.Timer
	// secretsTimer bounds the wait for its TLS secrets; secretsTimedOut:
	// it ran out.
	secretsTimer    *time.Timer
	secretsTimedOut bool
	// resolved: a DNS cluster's first lookup is done.
	resolved bool
	// released: a lingering cluster no route names any more.
	released bool
}

// NewClusters makes the cluster manager over the static clusters.
func NewClusters(static *Manager, sc *stats.Scope, log *slog.Logger, o ClustersOptions) *Clusters {
	m := &Clusters{static: map[string]*Cluster{}, scope: sc, log: log, o: o, init: warmup.Latch{Done: o.Initialized},
		active: map[string]*dynCluster{}, warming: map[string]*dynCluster{},
		cla: map[string]*config.Resource{}, claGone: map[string]bool{},
		lingering: map[string]*dynCluster{}, changedCh: make(chan struct{})}
	for _, n := range static.Names() {
		m.static[n], _ = static.Get(n)
	}
	m.cur.Store(static)
	return m
}

// Get returns the serving cluster named name.
func (m *Clusters) Get(name string) (*Cluster, bool) { return m.cur.Load().Get(name) }

// Current is the serving set.
func (m *Clusters) Current() *Manager { return m.cur.Load() }

// Known reports whether a cluster of that name is static, serving or
// warming: what Envoy's validate_clusters accepts.
func (m *Clusters) Known(name string) bool {
	if _, ok := m.Get(name); ok {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.warming[name] != nil
}

// Dynamic reports whether clusters may still arrive by CDS.
func (m *Clusters) Dynamic() bool { return m.o.CDS }

// Static returns the static cluster named name.
func (m *Clusters) Static(name string) *Cluster { return m.static[name] }

// unlock releases mu and, once the first update's clusters are warm,
// reports the end of initialization (outside the lock).
func (m *Clusters) unlock() {
	done := m.init.Check(len(m.warming))
	m.mu.Unlock()
	if done {
		m.init.Fire()
	}
}

// ApplyCDS applies the complete set of dynamic clusters: clusters absent
// from set are removed (in-flight requests finish on the connections they
// hold; one that routes still name, in inUse, serves on until they no
// longer do: see Release), new and changed ones are built and warm. It
// returns the clusters refused, by name; each keeps its serving version.
func (m *Clusters) ApplyCDS(set map[string]*config.Resource, inUse map[string]bool) map[string]error {
	m.mu.Lock()
	defer m.unlock()
	errs := map[string]error{}
	if m.stopped {
		for n := range set {
			errs[n] = fmt.Errorf("cluster %q: shutting down", n)
		}
		return errs
	}
	fresh := map[string]*dynCluster{}
	for _, name := range slices.Sorted(maps.Keys(set)) {
		r := set[name]
		if m.static[name] != nil {
			errs[name] = fmt.Errorf("cluster %q: a static cluster has this name", name)
			continue
		}
		if cur := m.current(name); cur != nil && (cur.res == r || proto.Equal(cur.res.Message, r.Message)) {
			continue
		}
		dc, err := m.build(r)
		if err != nil {
			errs[name] = fmt.Errorf("cluster %q: %w", name, err)
			continue
		}
		fresh[name] = dc
	}
	for name, dc := range m.active {
		if set[name] == nil {
			delete(m.active, name)
			if inUse[name] && m.o.Linger > 0 {
				m.linger(dc)
				continue
			}
			m.retired = append(m.retired, dc.c)
			m.log.Debug("cluster removed", "cluster", name)
		}
	}
	for name, w := range m.warming {
		if set[name] == nil || fresh[name] != nil {
			stopTimer(w.timer)
			stopTimer(w.secretsTimer)
			w.c.Stop()
			delete(m.warming, name)
			m.forgetIfGone(w.c)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(fresh)) {
		m.warm(fresh[name])
	}
	m.init.Applied()
	m.changed()
	return errs
}

// build builds one cluster and gives it the assignment it names, if known.
func (m *Clusters) build(r *config.Resource) (*dynCluster, error) {
	c, err := BuildClusterWith(r.Message.(*clusterv3.Cluster), m.scope, m.log, Env{Secrets: m.o.Secrets, Node: m.o.Node})
	if err != nil {
		return nil, err
	}
	if err := m.checkSource(c); err != nil {
		c.Stop()
		m.forgetIfGone(c)
		return nil, err
	}
	if c.EDSName != "" {
		if cla := m.cla[c.EDSName]; cla != nil {
			a, err := c.PrepareAssignment(cla.Message.(*endpointv3.ClusterLoadAssignment))
			if err != nil {
				c.Stop()
				m.forgetIfGone(c)
				return nil, fmt.Errorf("its endpoints %q: %w", c.EDSName, err)
			}
			c.ApplyAssignment(a)
		}
	}
	return &dynCluster{res: r, c: c}, nil
}

// warm puts a new cluster in service if it is ready, else makes it wait
// for its first lookup or assignment (mu held).
func (m *Clusters) warm(dc *dynCluster) {
	name := dc.c.Name
	if dc.c.Resolves() {
		m.warming[name] = dc
		m.log.Debug("cluster warming on its first DNS lookup", "cluster", name, "version", dc.res.Version)
		if wait, waiting := dc.c.secretsWait(); waiting && wait > 0 {
			dc.secretsTimer = m.secretsTimer(dc, name, wait)
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			dc.c.Start(ctx)
			cancel()
			m.mu.Lock()
			defer m.unlock()
			if m.warming[name] == dc && !m.stopped {
				dc.resolved = true
				if dc.secretsReady() { // else its secrets put it in service (Recheck, secretsTimer)
					m.activate(dc)
					m.changed()
				}
			}
		}()
		return
	}
	wait, waiting := dc.c.secretsWait()
	if dc.hostsReady(m) && !waiting {
		m.activate(dc)
		return
	}
	m.warming[name] = dc
	if waiting {
		// Its TLS secrets have not come: it warms until they do
		// (Recheck), at most their sources' initial_fetch_timeout.
		m.log.Debug("cluster warming on its TLS secrets", "cluster", name, "version", dc.res.Version)
		if wait > 0 {
			dc.secretsTimer = m.secretsTimer(dc, name, wait)
		}
		if dc.hostsReady(m) {
			return
		}
	}
	m.log.Debug("cluster warming on its endpoints", "cluster", name, "eds", dc.c.EDSName, "version", dc.res.Version)
	if t := dc.c.EDSFetchTimeout; t > 0 {
		dc.timer = time.AfterFunc(t, func() {
			m.mu.Lock()
			defer m.unlock()
			if m.warming[name] == dc && !m.stopped {
				m.log.Warn("EDS initial fetch timed out; cluster in use without endpoints", "cluster", name, "eds", dc.c.EDSName)
				m.claGone[dc.c.EDSName] = true
				if dc.secretsReady() {
					m.activate(dc)
					m.changed()
				}
			}
		})
	}
}

// secretsTimer puts dc in service without its secrets after wait.
func (m *Clusters) secretsTimer(dc *dynCluster, name string, wait time.Duration) *time.Timer {
	return time.AfterFunc(wait, func() {
		m.mu.Lock()
		defer m.unlock()
		if m.warming[name] == dc && !m.stopped {
			m.log.Warn("TLS secrets initial fetch timed out; cluster in use without them (its connections fail until they come)", "cluster", name)
			dc.secretsTimedOut = true
			if dc.hostsReady(m) {
				m.activate(dc)
				m.changed()
			}
		}
	})
}

// secretsReady: its TLS secrets came, or the wait for them ran out.
func (dc *dynCluster) secretsReady() bool { return dc.secretsTimedOut || dc.c.TLSReady() }

// hostsReady: its hosts are known (or given up on): a DNS cluster's
// first lookup is done, an EDS cluster's assignment came or timed out
// (mu held).
func (dc *dynCluster) hostsReady(m *Clusters) bool {
	if dc.c.Resolves() {
		return dc.resolved
	}
	return dc.c.HasEndpoints() || m.claGone[dc.c.EDSName]
}

// Recheck puts in service the warming clusters that something outside
// the manager made warm (their TLS secrets came).
func (m *Clusters) Recheck() {
	m.mu.Lock()
	defer m.unlock()
	if m.stopped {
		return
	}
	warmed := false
	for _, name := range slices.Sorted(maps.Keys(m.warming)) {
		dc := m.warming[name]
		if dc.hostsReady(m) && dc.secretsReady() {
			m.activate(dc)
			warmed = true
		}
	}
	if warmed {
		m.changed()
	}
}

func (m *Clusters) current(name string) *dynCluster {
	if w := m.warming[name]; w != nil {
		return w
	}
	return m.active[name]
}

// activate moves a warm cluster into service (mu held); the one it
// replaces stops once the new set is in place (changed).
func (m *Clusters) activate(dc *dynCluster) {
	name := dc.c.Name
	if m.warming[name] == dc {
		delete(m.warming, name)
	}
	stopTimer(dc.timer)
	stopTimer(dc.secretsTimer)
	if l := m.lingering[name]; l != nil {
		delete(m.lingering, name)
		stopTimer(l.timer)
		m.retired = append(m.retired, l.c)
	}
	if old := m.active[name]; old != nil {
		m.retired = append(m.retired, old.c)
		m.log.Debug("cluster updated", "cluster", name, "version", dc.res.Version)
	} else {
		m.log.Debug("cluster added", "cluster", name, "version", dc.res.Version)
	}
	m.active[name] = dc
}

// changed swaps in the serving set (static and active clusters), stops
// the retired ones and asks for the endpoints the clusters wait for (mu
// held).
func (m *Clusters) changed() {
	all := make([]*Cluster, 0, len(m.static)+len(m.active)+len(m.lingering))
	for _, c := range m.static {
		all = append(all, c)
	}
	for _, dc := range m.active {
		all = append(all, dc.c)
	}
	for _, dc := range m.lingering {
		all = append(all, dc.c)
	}
	m.cur.Store(NewManager(all))
	close(m.changedCh)
	m.changedCh = make(chan struct{})
	for _, c := range m.retired {
		c.Stop() // in-flight requests finish on the connections they hold
		m.forgetIfGone(c)
	}
	m.retired = nil
	for _, c := range m.forgets {
		if !m.statNameUsed(c.StatName) {
			c.ForgetStats()
		}
	}
	m.forgets = nil
	names := map[string]*corev3.ConfigSource{}
	for _, dm := range []map[string]*dynCluster{m.active, m.warming} {
		for _, dc := range dm {
			if dc.c.EDSName != "" {
				names[dc.c.EDSName] = dc.c.EDSSource
			}
		}
	}
	for n := range m.cla {
		if _, ok := names[n]; !ok {
			delete(m.cla, n)
			delete(m.claGone, n)
		}
	}
	if m.o.WatchEndpoints != nil {
		m.eds.Set(names, true, m.o.WatchEndpoints)
	}
}

// linger keeps a removed cluster serving while routes name it, up to
// o.Linger (mu held).
func (m *Clusters) linger(dc *dynCluster) {
	name := dc.c.Name
	m.lingering[name] = dc
	m.log.Debug("cluster removed; serving on while routes name it", "cluster", name, "for at most", m.o.Linger)
	dc.timer = time.AfterFunc(m.o.Linger, func() {
		m.mu.Lock()
		defer m.unlock()
		if m.lingering[name] == dc && !m.stopped {
			m.drop(name)
			m.changed()
		}
	})
}

// drop retires a lingering cluster (mu held).
func (m *Clusters) drop(name string) {
	dc := m.lingering[name]
	delete(m.lingering, name)
	stopTimer(dc.timer)
	m.retired = append(m.retired, dc.c)
	m.log.Debug("cluster removed", "cluster", name)
}

// releaseGrace is how long a lingering cluster serves once no route
// names it: requests routed by the previous route table may still be
// about to look it up.
const releaseGrace = time.Second

// Release lets go of the lingering clusters that no route names any more
// (inUse: the names routes use now): each is retired after releaseGrace.
func (m *Clusters) Release(inUse map[string]bool) {
	m.mu.Lock()
	defer m.unlock()
	for name, dc := range m.lingering {
		if !inUse[name] && !dc.released {
			dc.released = true
			dc.timer.Reset(min(releaseGrace, m.o.Linger))
		}
	}
}

// Await returns the cluster named name once it serves, waiting (up to
// max, or until ctx ends) while it warms: a route may be moved to a
// cluster in the same update that adds it, before the cluster's
// endpoints arrive. It returns at once when no cluster of that name
// serves or warms.
func (m *Clusters) Await(ctx context.Context, name string, max time.Duration) (*Cluster, bool) {
	var timer *time.Timer
	for {
		if c, ok := m.Get(name); ok {
			if timer != nil {
				timer.Stop()
			}
			return c, true
		}
		m.mu.Lock()
		c, serving := m.Get(name) // it may have gone into service meanwhile
		warming, ch := m.warming[name] != nil, m.changedCh
		m.mu.Unlock()
		if serving {
			return c, true
		}
		if !warming || max <= 0 {
			return nil, false
		}
		if timer == nil {
			timer = time.NewTimer(max)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false
		case <-timer.C:
			return nil, false
		}
	}
}

// checkSource refuses a cluster whose eds_config cannot be subscribed to.
func (m *Clusters) checkSource(c *Cluster) error {
	if c.EDSSource == nil {
		return nil
	}
	if m.o.CheckSource == nil {
		if c.EDSSource.GetAds() == nil {
			return config.At("eds_cluster_config.eds_config", fmt.Errorf("only ads: {} is supported here"))
		}
		return nil
	}
	return config.At("eds_cluster_config.eds_config", m.o.CheckSource(c.EDSSource))
}

// forgetIfGone drops a stopped cluster's stats, at the end of changed(),
// when no cluster with its stat name is left, static, active, warming or
// lingering (mu held): a removed cluster's stats go, as in Envoy, while
// an updated one's carry on. (Stats are by StatName, alt_stat_name,
// which clusters may share and an update may change; the new versions
// of an update join the maps only as they warm, hence the wait.)
func (m *Clusters) forgetIfGone(c *Cluster) { m.forgets = append(m.forgets, c) }

func (m *Clusters) statNameUsed(name string) bool {
	for _, o := range m.static {
		if o.StatName == name {
			return true
		}
	}
	for _, set := range []map[string]*dynCluster{m.active, m.warming, m.lingering} {
		for _, d := range set {
			if d.c.StatName == name {
				return true
			}
		}
	}
	return false
}

// ApplyEDS applies the complete set of assignments: each changed one goes
// to every cluster that takes it; one that a cluster cannot use is
// refused (returned by name) and its previous version stays; one that is
// gone leaves its clusters with the endpoints they had (update_empty).
func (m *Clusters) ApplyEDS(set map[string]*config.Resource) map[string]error {
	m.mu.Lock()
	defer m.unlock()
	errs := map[string]error{}
	type job struct {
		c *Cluster
		a *Assignment
	}
	var jobs []job
	for _, name := range slices.Sorted(maps.Keys(set)) {
		r := set[name]
		if m.cla[name] == r {
			continue // unchanged
		}
		var mine []job
		for _, c := range m.takers(name) {
			a, err := c.PrepareAssignment(r.Message.(*endpointv3.ClusterLoadAssignment))
			if err != nil {
				errs[name] = fmt.Errorf("cluster load assignment %q: %w", name, err)
				break
			}
			mine = append(mine, job{c, a})
		}
		if errs[name] == nil {
			jobs = append(jobs, mine...)
		}
	}
	for name := range m.cla {
		if set[name] == nil {
			// Removed (delta, or its TTL ran out): as Envoy, its clusters
			// keep the endpoints they have and count update_empty (a
			// cluster removed in the same update may still serve routes
			// that name it, and the order of the two is not fixed).
			for _, c := range m.takers(name) {
				c.Stats.UpdateEmpty.Inc()
			}
		}
	}
	for _, j := range jobs {
		j.c.ApplyAssignment(j.a)
	}
	next := map[string]*config.Resource{}
	for k, v := range set {
		if errs[k] != nil {
			if old := m.cla[k]; old != nil {
				next[k] = old
			}
			continue
		}
		next[k] = v
		delete(m.claGone, k)
	}
	m.cla = next
	warmed := false
	for _, name := range slices.Sorted(maps.Keys(m.warming)) {
		// (A DNS cluster is put in service by its first lookup, or by its
		// secrets after it.)
		if dc := m.warming[name]; !dc.c.Resolves() && dc.c.HasEndpoints() && dc.secretsReady() {
			m.activate(dc)
			warmed = true
		}
	}
	if warmed {
		m.changed()
	}
	return errs
}

// takers are the active and warming clusters that take assignment name
// (mu held).
func (m *Clusters) takers(name string) []*Cluster {
	var out []*Cluster
	for _, dm := range []map[string]*dynCluster{m.active, m.warming} {
		for _, cn := range slices.Sorted(maps.Keys(dm)) {
			if c := dm[cn].c; c.EDSName == name {
				out = append(out, c)
			}
		}
	}
	return out
}

// InitTimeout ends initialization when the first CDS response has not
// come (or not warmed) within the initial fetch timeout.
func (m *Clusters) InitTimeout() {
	m.mu.Lock()
	m.init.End()
	m.mu.Unlock()
	m.init.Fire()
}

// ClustersDump is what the config dump shows of the dynamic clusters.
type ClustersDump struct {
	Active, Warming, Endpoints []*config.Resource
}

// Dump returns the dynamic clusters and the assignments they hold, sorted
// by name.
func (m *Clusters) Dump() ClustersDump {
	m.mu.Lock()
	defer m.mu.Unlock()
	var d ClustersDump
	for _, n := range slices.Sorted(maps.Keys(m.active)) {
		d.Active = append(d.Active, m.active[n].res)
	}
	for _, n := range slices.Sorted(maps.Keys(m.warming)) {
		d.Warming = append(d.Warming, m.warming[n].res)
	}
	for _, n := range slices.Sorted(maps.Keys(m.cla)) {
		d.Endpoints = append(d.Endpoints, m.cla[n])
	}
	return d
}

// Stop stops every cluster, serving or warming; later updates are refused.
func (m *Clusters) Stop() {
	m.mu.Lock()
	m.stopped = true
	for _, w := range m.warming {
		stopTimer(w.timer)
		stopTimer(w.secretsTimer)
		w.c.Stop()
	}
	for _, l := range m.lingering {
		stopTimer(l.timer)
	}
	m.mu.Unlock()
	m.cur.Load().Stop()
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
