package listener

import (
	"fmt"
	"maps"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
)

// routeEntry is one route configuration name: its serving version (nil
// until it arrives) and the connection managers that use it.
type routeEntry struct {
	res *config.Resource
	// rc is what serves: res's message with the VHDS virtual hosts.
	rc   *routev3.RouteConfiguration
	vhds *vhdsState
	subs map[*routeSub]bool
	// scoped are the scoped routes subscriptions whose scopes name it.
	scoped map[*scopeSub]bool
}

type routeSub struct {
	name    string
	source  *corev3.ConfigSource
	timeout time.Duration
	update  filter.RouteUpdate
}

// fetchTimeout is a config source's initial_fetch_timeout (default 15 s;
// 0 waits for ever).
func fetchTimeout(cs *corev3.ConfigSource) time.Duration {
	if d := cs.GetInitialFetchTimeout(); d != nil {
		return d.AsDuration()
	}
	return 15 * time.Second
}

// routeRecorder is the RDS source a listener is built with: it records
// the listener's subscriptions, and builds each with the route
// configuration already known (the manager's lock is held by the caller
// of Build).
type routeRecorder struct {
	m      *Manager
	subs   []*routeSub
	scopes []*scopeSub
}

func (r *routeRecorder) Subscribe(name string, src *corev3.ConfigSource, update filter.RouteUpdate) error {
	sub := &routeSub{name: name, source: src, timeout: fetchTimeout(src), update: update}
	if e := r.m.routes[name]; e != nil && e.res != nil {
		commit, err := update(e.rc)
		if err != nil {
			return fmt.Errorf("route configuration %q: %w", name, err)
		}
		commit()
	}
	r.subs = append(r.subs, sub)
	return nil
}

// StaticRoutes returns the RDS source for building a static listener; its
// subscriptions start with RegisterStatic.
func (m *Manager) StaticRoutes() *StaticRoutes { return &StaticRoutes{rec: routeRecorder{m: m}} }

// StaticRoutes records a static listener's RDS subscriptions.
type StaticRoutes struct{ rec routeRecorder }

// Subscribe implements filter.RouteSource.
func (s *StaticRoutes) Subscribe(name string, src *corev3.ConfigSource, update filter.RouteUpdate) error {
	return s.rec.Subscribe(name, src, update)
}

// RegisterStatic starts a static listener's route subscriptions (before
// Start): it serves at once, and answers 404 until its routes arrive.
func (m *Manager) RegisterStatic(s *StaticRoutes) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sub := range s.rec.subs {
		m.entry(sub.name).subs[sub] = true
	}
	m.registerScopes(s.rec.scopes)
}

// WatchStaticRoutes asks for the route configurations the static
// listeners use.
func (m *Manager) WatchStaticRoutes() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.routesChanged()
}

func (m *Manager) entry(name string) *routeEntry {
	e := m.routes[name]
	if e == nil {
		e = &routeEntry{subs: map[*routeSub]bool{}, scoped: map[*scopeSub]bool{}}
		m.routes[name] = e
	}
	return e
}

func (m *Manager) unsubscribe(dl *managed) {
	for _, s := range dl.subs {
		if e := m.routes[s.name]; e != nil {
			delete(e.subs, s)
		}
	}
	m.unregisterScopes(dl.scopes)
}

// routesChanged subscribes to exactly the route configurations that
// listeners use, from each config source (mu held).
func (m *Manager) routesChanged() {
	m.scopeSourcesChanged()
	names := map[string]*corev3.ConfigSource{}
	for name, e := range m.routes {
		if len(e.subs) == 0 && len(e.scoped) == 0 {
			m.endVHDS(e)
			delete(m.routes, name)
			continue
		}
		names[name] = e.source()
	}
	if m.o.WatchRoutes != nil {
		m.rds.Set(names, m.o.LDS, m.o.WatchRoutes)
	}
	m.vhdsChanged()
}

// source is where a route configuration comes from: its first user's
// config source.
func (e *routeEntry) source() *corev3.ConfigSource {
	for s := range e.subs {
		return s.source
	}
	for ss := range e.scoped {
		return ss.sub.RDS
	}
	return nil
}

// ApplyRDS applies the set of route configurations: each changed one is
// compiled for every connection manager that uses it and installed in
// all of them, or refused (returned by name) with its previous version
// left serving; one that is gone leaves its connection managers without
// routes (404). Listeners waiting for their routes open once they have
// them all.
func (m *Manager) ApplyRDS(set map[string]*config.Resource) map[string]error {
	m.mu.Lock()
	defer m.unlock()
	errs := map[string]error{}
	for _, name := range slices.Sorted(maps.Keys(set)) {
		r := set[name]
		e := m.routes[name]
		if e == nil || e.res == r {
			continue
		}
		if err := m.install(e, name, r); err != nil {
			errs[name] = fmt.Errorf("route configuration %q: %w", name, err)
			continue
		}
		m.log.Debug("route configuration updated", "route_config", name, "version", r.Version, "users", len(e.subs))
	}
	for name, e := range m.routes {
		if set[name] == nil && e.res != nil {
			// Removed (delta): its listeners route nothing.
			e.res, e.rc = nil, nil
			m.endVHDS(e)
			m.vhdsChanged()
			for sub := range e.subs {
				if commit, err := sub.update(nil); err == nil {
					commit()
				}
			}
			for ss := range e.scoped {
				m.buildScoped(ss, "", nil, true)
			}
			m.log.Debug("route configuration removed", "route_config", name)
		}
	}
	m.activateWarm()
	return errs
}

// install compiles r (with the VHDS virtual hosts it keeps) for every
// user, scoped routes too, and commits it to all, or to none (mu held).
func (m *Manager) install(e *routeEntry, name string, r *config.Resource) error {
	rc := r.Message.(*routev3.RouteConfiguration)
	if errs := config.ValidationErrors(rc.ValidateAll()); len(errs) > 0 {
		return config.Join(errs)
	}
	vs, err := m.nextVHDS(e, rc)
	if err != nil {
		return err
	}
	var vhosts map[string]*config.Resource
	if vs != nil {
		vhosts = vs.vhosts
	}
	commit, err := m.compileAll(e, name, effective(rc, vhosts))
	if err != nil {
		return err
	}
	e.res = r
	commit()
	m.setVHDS(e, name, vs)
	return nil
}

// compileAll compiles rc, the route configuration named name as it is to
// serve, for every user of e; the commit installs it in all (mu held).
func (m *Manager) compileAll(e *routeEntry, name string, rc *routev3.RouteConfiguration) (func(), error) {
	commits := make([]func(), 0, len(e.subs))
	for sub := range e.subs {
		commit, err := sub.update(rc)
		if err != nil {
			return nil, err
		}
		commits = append(commits, commit)
	}
	for ss := range e.scoped {
		if err := m.buildScoped(ss, name, rc, false); err != nil {
			return nil, err
		}
	}
	return func() {
		for _, c := range commits {
			c()
		}
		e.rc = rc
		for ss := range e.scoped {
			m.buildScoped(ss, "", nil, true) // checked above
		}
	}, nil
}
