package listener

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/warmup"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Manager is the listener manager for the listeners LDS delivers and the
// route configurations (RDS) that listeners name, static ones included.
//
// Updates are per resource, as Envoy applies them: a listener that fails
// to build (or cannot have its address) is refused, its error returned by
// name, and its serving version stays; the rest of the update applies. A
// new or changed listener warms until every route configuration it names
// has arrived (or their initial_fetch_timeout passed), then takes over the
// socket of the version it replaces, whose connections drain. A route
// configuration that one of its listeners cannot compile is refused the
// same way and its previous version keeps serving.
type Manager struct {
	o   ManagerOptions
	log *slog.Logger

	mu       sync.Mutex
	active   map[string]*managed
	warming  map[string]*managed
	routes   map[string]*routeEntry
	retiring map[*Listener]bool
	rds      config.Watches // RDS names by source
	vhds     config.Watches // VHDS names by source
	// srds is the SRDS set (scoped route configurations by name);
	// scoped the scoped routes subscriptions in service; srdsSrc the SRDS
	// sources watched.
	srds        map[string]*config.Resource
	srdsArrived bool
	scoped      map[*scopeSub]bool
	srdsSrc     map[string]*corev3.ConfigSource
	init        warmup.Latch
	stopped     bool

	createFail *stats.Counter
}

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	// Build is how listeners are built; its Routes is the manager.
	Build Options
	// Static are the bootstrap's listeners: LDS may not use their names or
	// addresses.
	Static []*Listener
	// DrainTime bounds how long a replaced or removed listener's
	// connections may take to finish.
	DrainTime time.Duration
	// LDS: listeners come from LDS (RDS names are then always watched,
	// even when none is used).
	LDS bool
	// WatchRoutes sets the route configuration names wanted from one
	// config source (nil names: none any more). It is called with the
	// manager's lock held, so calls come in order; it must not call back
	// into the manager.
	WatchRoutes func(src *corev3.ConfigSource, names []string)
	// WatchVirtualHosts sets the VHDS names wanted from one config
	// source, under the lock as WatchRoutes.
	WatchVirtualHosts func(src *corev3.ConfigSource, names []string)
	// AskVirtualHostsAgain asks a config source once more for VHDS names
	// it already watches (an on-demand host not answered).
	AskVirtualHostsAgain func(src *corev3.ConfigSource, names []string)
	// CheckVHDS refuses a vhds config source this process cannot
	// subscribe to (nil: VHDS is refused).
	CheckVHDS func(src *corev3.ConfigSource) error
	// WatchScopes subscribes to (or, with false, leaves) every scoped
	// route configuration of an SRDS source, under the lock as WatchRoutes.
	WatchScopes func(src *corev3.ConfigSource, on bool)
	// Initialized is called once, without the lock, when the first LDS
	// update's listeners are warm (or their warming timed out).
	Initialized func()
}

type managed struct {
	res    *config.Resource
	l      *Listener
	subs   []*routeSub
	scopes []*scopeSub
	timer  *time.Timer
	// timedOut: its routes' initial fetch timed out; it opens without them.
	timedOut bool
}

// NewManager makes a listener manager.
func NewManager(o ManagerOptions) *Manager {
	m := &Manager{o: o, log: o.Build.Log, init: warmup.Latch{Done: o.Initialized},
		active: map[string]*managed{}, warming: map[string]*managed{},
		routes: map[string]*routeEntry{}, retiring: map[*Listener]bool{},
		srds: map[string]*config.Resource{}, scoped: map[*scopeSub]bool{}, srdsSrc: map[string]*corev3.ConfigSource{}}
	m.createFail = o.Build.Stats.Scope("listener_manager", "", "").Counter("listener_create_failure")
	return m
}

// SetStatic names the bootstrap's listeners (before Start): LDS may not
// use their names or addresses.
func (m *Manager) SetStatic(ls []*Listener) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.o.Static = ls
}

// unlock releases mu and, once the first LDS update's listeners are all
// warm, reports the end of initialization (outside the lock).
func (m *Manager) unlock() {
	done := m.init.Check(len(m.warming))
	m.mu.Unlock()
	if done {
		m.init.Fire()
	}
}

// InitTimeout ends initialization when the first LDS response has not
// come (or not warmed) within the initial fetch timeout.
func (m *Manager) InitTimeout() {
	m.mu.Lock()
	m.init.End()
	m.mu.Unlock()
	m.init.Fire()
}

// ApplyLDS applies the complete set of dynamic listeners: listeners
// absent from set drain and close, new and changed ones are built and
// warm. It returns the listeners refused, by name; each keeps its serving
// version.
func (m *Manager) ApplyLDS(set map[string]*config.Resource) map[string]error {
	m.mu.Lock()
	defer m.unlock()
	errs := map[string]error{}
	if m.stopped {
		for n := range set {
			errs[n] = fmt.Errorf("listener %q: shutting down", n)
		}
		return errs
	}
	fresh := map[string]*managed{}
	addrs := m.keptAddresses(set)
	for _, name := range slices.Sorted(maps.Keys(set)) {
		dl, err := m.build(name, set[name], set, addrs)
		if err != nil {
			errs[name] = fmt.Errorf("listener %q: %w", name, err)
			continue
		}
		if dl != nil {
			fresh[name] = dl
		}
	}
	for name, dl := range m.active {
		if set[name] == nil {
			delete(m.active, name)
			m.unsubscribe(dl)
			m.log.Debug("listener removed", "listener", name)
			m.retire(dl.l)
		}
	}
	for name, w := range m.warming {
		if set[name] == nil || fresh[name] != nil {
			stopTimer(w.timer)
			m.unsubscribe(w)
			delete(m.warming, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(fresh)) {
		m.startWarming(fresh[name])
	}
	m.init.Applied()
	m.routesChanged()
	m.activateWarm()
	return errs
}

// keptAddresses says who serves each address whatever this update does:
// the static listeners and the dynamic ones it leaves unchanged.
func (m *Manager) keptAddresses(set map[string]*config.Resource) map[string]string {
	addrs := map[string]string{}
	for _, l := range m.o.Static {
		addrs[l.ConfiguredAddress()] = l.Name
	}
	for name, r := range set {
		if cur := m.current(name); cur != nil && proto.Equal(cur.res.Message, r.Message) {
			addrs[cur.l.ConfiguredAddress()] = name
		}
	}
	return addrs
}

// build builds one listener of an update; nil, nil when it is unchanged
// (mu held).
func (m *Manager) build(name string, r *config.Resource, set map[string]*config.Resource, addrs map[string]string) (*managed, error) {
	cfg := r.Message.(*listenerv3.Listener)
	for _, l := range m.o.Static {
		if l.Name == name {
			return nil, fmt.Errorf("a static listener has this name")
		}
	}
	if cur := m.current(name); cur != nil && proto.Equal(cur.res.Message, cfg) {
		return nil, nil
	}
	rec := &routeRecorder{m: m}
	o := m.o.Build
	o.Routes = rec
	l, err := Build(cfg, o)
	if err != nil {
		return nil, err
	}
	a := l.ConfiguredAddress()
	if _, port, _ := net.SplitHostPort(a); port != "0" {
		if other, dup := addrs[a]; dup && other != name {
			return nil, fmt.Errorf("address %s is used by listener %q", a, other)
		}
		if err := m.bindFree(name, a, l, set); err != nil {
			return nil, err
		}
		addrs[a] = name
	}
	return &managed{res: r, l: l, subs: rec.subs, scopes: rec.scopes}, nil
}

// bindFree checks that a listener's address can be bound: its own
// serving version's address is taken over; the address of a listener
// this update removes is freed when it drains; an address another
// listener keeps serving is refused; any other address is test-bound.
func (m *Manager) bindFree(name, addr string, l *Listener, set map[string]*config.Resource) error {
	for other, dl := range m.active {
		if dl.l.ConfiguredAddress() != addr {
			continue
		}
		if other == name || set[other] == nil {
			return nil
		}
		return fmt.Errorf("address %s is in use by listener %q", addr, other)
	}
	return l.CheckBind()
}

// startWarming subscribes a new listener's routes and starts its warming
// timer (mu held).
func (m *Manager) startWarming(dl *managed) {
	name := dl.l.Name
	for _, sub := range dl.subs {
		m.entry(sub.name).subs[sub] = true
	}
	m.registerScopes(dl.scopes)
	m.warming[name] = dl
	m.log.Debug("listener warming", "listener", name, "version", dl.res.Version, "routes", len(dl.subs))
	// It waits for its routes and its TLS secrets, each as long as
	// their sources' initial_fetch_timeout says (0: for ever).
	t := dl.fetchTimeout()
	if sw, waiting := dl.l.SecretsWait(); waiting {
		switch {
		case len(dl.subs) == 0 && len(dl.scopes) == 0:
			t = sw // nothing else to wait for
		case t > 0 && (sw == 0 || sw > t):
			t = sw
		}
	}
	if t > 0 {
		dl.timer = time.AfterFunc(t, func() {
			m.mu.Lock()
			defer m.unlock()
			if m.warming[name] == dl && !m.stopped {
				m.log.Warn("initial fetch timed out; listener opens without its routes (404) or TLS secrets (handshakes fail) until they arrive", "listener", name)
				dl.timedOut = true
				m.activate(dl)
			}
		})
	}
}

func (m *Manager) current(name string) *managed {
	if w := m.warming[name]; w != nil {
		return w
	}
	return m.active[name]
}

// fetchTimeout is the longest initial_fetch_timeout of the listener's
// route subscriptions (0 when one has none: wait for ever).
func (dl *managed) fetchTimeout() time.Duration {
	var t time.Duration
	for _, s := range dl.subs {
		if s.timeout == 0 {
			return 0
		}
		t = max(t, s.timeout)
	}
	for _, ss := range dl.scopes {
		if ss.sub.SRDS == nil {
			continue
		}
		if ss.timeout == 0 {
			return 0
		}
		t = max(t, ss.timeout)
	}
	return t
}

// Recheck activates the warming listeners that became warm by something
// outside the manager (their TLS secrets arrived).
func (m *Manager) Recheck() {
	m.mu.Lock()
	defer m.unlock()
	if !m.stopped {
		m.activateWarm()
	}
}

func (m *Manager) warm(dl *managed) bool {
	if dl.timedOut {
		return true
	}
	if !dl.l.TransportReady() {
		return false
	}
	for _, s := range dl.subs {
		if e := m.routes[s.name]; e == nil || e.res == nil || e.vhds != nil && !e.vhds.arrived {
			return false
		}
	}
	return m.scopesReady(dl.scopes)
}

func (m *Manager) activateWarm() {
	for _, name := range slices.Sorted(maps.Keys(m.warming)) {
		if dl := m.warming[name]; m.warm(dl) {
			m.activate(dl)
		}
	}
}

// activate puts a warm listener in service (mu held): it takes over the
// socket of the version it replaces when the address and I/O model are
// the same (old connections drain), else the old one drains and the new
// one binds.
func (m *Manager) activate(dl *managed) {
	name := dl.l.Name
	delete(m.warming, name)
	stopTimer(dl.timer)
	old := m.active[name]
	switch {
	case old != nil && dl.l.CanTakeOver(old.l):
		dl.l.TakeOver(old.l)
		m.retireDrained(old.l)
	default:
		if old != nil {
			m.retire(old.l)
		}
		if err := dl.l.Start(context.Background()); err != nil {
			m.createFail.Inc()
			m.log.Error("listener could not open", "listener", name, "err", err)
			m.unsubscribe(dl)
			if old != nil {
				m.unsubscribe(old)
			}
			delete(m.active, name)
			m.routesChanged()
			return
		}
	}
	if old != nil {
		m.unsubscribe(old)
	}
	m.active[name] = dl
	m.log.Info("listening", "listener", name, "address", dl.l.Addr().String(), "version", dl.res.Version)
	m.routesChanged()
}

// retire drains a listener that left; it is closed when its connections
// are done or the drain time passes.
func (m *Manager) retire(l *Listener) {
	l.Drain()
	m.retireDrained(l)
}

func (m *Manager) retireDrained(l *Listener) {
	m.retiring[l] = true
	m.log.Debug("listener draining", "listener", l.Name, "connections", l.Active())
	go func() {
		deadline := time.Now().Add(m.o.DrainTime)
		for l.Active() > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		l.Close()
		m.mu.Lock()
		delete(m.retiring, l)
		m.mu.Unlock()
		m.log.Debug("listener closed", "listener", l.Name)
	}()
}

// ClusterNames returns the clusters that the dynamic listeners (serving
// and warming) and the route configurations in use name.
func (m *Manager) ClusterNames() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := map[string]bool{}
	for _, dm := range []map[string]*managed{m.active, m.warming} {
		for _, dl := range dm {
			config.ClusterNames(dl.res.Message, names)
		}
	}
	for _, e := range m.routes {
		if e.rc != nil {
			config.ClusterNames(e.rc, names)
		}
	}
	return names
}

// Listeners are the serving dynamic listeners, by name, then the
// draining ones.
func (m *Manager) Listeners() []*Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Listener
	for _, name := range slices.Sorted(maps.Keys(m.active)) {
		out = append(out, m.active[name].l)
	}
	for l := range m.retiring {
		out = append(out, l)
	}
	return out
}

// Active are the dynamic listeners that are serving or warming (not the
// draining ones), by name.
func (m *Manager) Active() []*Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Listener, 0, len(m.active))
	for _, name := range slices.Sorted(maps.Keys(m.active)) {
		out = append(out, m.active[name].l)
	}
	return out
}

// Addr returns the bound address of a serving dynamic listener.
func (m *Manager) Addr(name string) net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if dl := m.active[name]; dl != nil {
		return dl.l.Addr()
	}
	return nil
}

// ListenerState is one dynamic listener in the config dump.
type ListenerState struct {
	Name            string
	Active, Warming *config.Resource
}

// Dump returns the dynamic listeners (serving and warming versions) and
// the route configurations, sorted by name.
func (m *Manager) Dump() (ls []ListenerState, routes []*config.Resource, routeNames []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := map[string]bool{}
	for n := range m.active {
		names[n] = true
	}
	for n := range m.warming {
		names[n] = true
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		s := ListenerState{Name: n}
		if a := m.active[n]; a != nil {
			s.Active = a.res
		}
		if w := m.warming[n]; w != nil {
			s.Warming = w.res
		}
		ls = append(ls, s)
	}
	for _, n := range slices.Sorted(maps.Keys(m.routes)) {
		routeNames = append(routeNames, n)
		routes = append(routes, m.routes[n].dumped())
	}
	return ls, routes, routeNames
}

// Stop stops warming; later updates are refused. Listeners are closed by
// their owner (Listeners).
func (m *Manager) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	for _, w := range m.warming {
		stopTimer(w.timer)
	}
	for _, e := range m.routes {
		m.endVHDS(e) // requests waiting on demand route now
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
