package listener

import (
	"fmt"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
)

// routeEntry is one route configuration name: its serving version (nil
// until it arrives) and the connection managers that use it.
type routeEntry struct {
	res  *config.Resource
	subs map[*routeSub]bool
}

type routeSub struct {
	name    string
	timeout time.Duration
	update  filter.RouteUpdate
}

// routeRecorder is the RDS source a listener is built with: it records
// the listener's subscriptions, and builds each with the route
// configuration already known (the manager's lock is held by the caller
// of Build).
type routeRecorder struct {
	m    *Manager
	subs []*routeSub
}

func (r *routeRecorder) Subscribe(name string, timeout time.Duration, update filter.RouteUpdate) error {
	sub := &routeSub{name: name, timeout: timeout, update: update}
	if e := r.m.routes[name]; e != nil && e.res != nil {
		commit, err := update(e.res.Message.(*routev3.RouteConfiguration))
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
func (s *StaticRoutes) Subscribe(name string, timeout time.Duration, update filter.RouteUpdate) error {
	return s.rec.Subscribe(name, timeout, update)
}

// RegisterStatic starts a static listener's route subscriptions (before
// Start): it serves at once, and answers 404 until its routes arrive.
func (m *Manager) RegisterStatic(s *StaticRoutes) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sub := range s.rec.subs {
		m.entry(sub.name).subs[sub] = true
	}
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
		e = &routeEntry{subs: map[*routeSub]bool{}}
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
}

// routesChanged subscribes to exactly the route configurations that
// listeners use (mu held).
func (m *Manager) routesChanged() {
	var names []string
	for name, e := range m.routes {
		if len(e.subs) == 0 {
			delete(m.routes, name)
			continue
		}
		names = append(names, name)
	}
	if (m.o.LDS || len(names) > 0) && m.o.WatchRoutes != nil {
		m.o.WatchRoutes(sortedKeys(m.routes))
	}
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
	for _, name := range sortedKeys(set) {
		r := set[name]
		e := m.routes[name]
		if e == nil || e.res == r {
			continue
		}
		if err := e.install(r); err != nil {
			errs[name] = fmt.Errorf("route configuration %q: %w", name, err)
			continue
		}
		m.log.Debug("route configuration updated", "route_config", name, "version", r.Version, "users", len(e.subs))
	}
	for name, e := range m.routes {
		if set[name] == nil && e.res != nil {
			// Removed (delta): its listeners route nothing.
			e.res = nil
			for sub := range e.subs {
				if commit, err := sub.update(nil); err == nil {
					commit()
				}
			}
			m.log.Debug("route configuration removed", "route_config", name)
		}
	}
	m.activateWarm()
	return errs
}

// install compiles r for every user and commits it to all, or to none.
func (e *routeEntry) install(r *config.Resource) error {
	rc := r.Message.(*routev3.RouteConfiguration)
	if errs := config.ValidationErrors(rc.ValidateAll()); len(errs) > 0 {
		return config.Join(errs)
	}
	commits := make([]func(), 0, len(e.subs))
	for sub := range e.subs {
		commit, err := sub.update(rc)
		if err != nil {
			return err
		}
		commits = append(commits, commit)
	}
	for _, c := range commits {
		c()
	}
	e.res = r
	return nil
}
