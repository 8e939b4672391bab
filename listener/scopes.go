package listener

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/router"
)

// scopeSub is a connection manager's scoped routes: its scopes (inline,
// or every scope SRDS delivers) and the route configurations they name,
// which the manager subscribes to by RDS on its behalf.
type scopeSub struct {
	sub     filter.ScopeSubscription
	timeout time.Duration
	names   map[string]bool // route configurations its scopes name now
}

// SubscribeScopes implements filter.RouteSource for a listener being
// built: the scopes known now are built at once (mu held by the caller
// of Build).
func (r *routeRecorder) SubscribeScopes(s filter.ScopeSubscription) error {
	ss := &scopeSub{sub: s, names: map[string]bool{}}
	if s.SRDS != nil {
		ss.timeout = fetchTimeout(s.SRDS)
	}
	if s.Inline != nil || r.m.srdsArrived {
		if err := r.m.buildScoped(ss, "", nil, true); err != nil {
			return err
		}
	}
	r.scopes = append(r.scopes, ss)
	return nil
}

// SubscribeScopes implements filter.RouteSource for a static listener.
func (s *StaticRoutes) SubscribeScopes(sub filter.ScopeSubscription) error {
	return s.rec.SubscribeScopes(sub)
}

// scopesOf are the scopes a subscription has now, sorted by name.
func (m *Manager) scopesOf(ss *scopeSub) []*routev3.ScopedRouteConfiguration {
	if ss.sub.Inline != nil {
		return ss.sub.Inline
	}
	out := make([]*routev3.ScopedRouteConfiguration, 0, len(m.srds))
	for _, n := range slices.Sorted(maps.Keys(m.srds)) {
		out = append(out, m.srds[n].Message.(*routev3.ScopedRouteConfiguration))
	}
	return out
}

// buildScoped builds ss's scopes with the route configurations known
// (with over standing for the route configuration named name, when set)
// and commits them when commit is set. It also brings ss's RDS names up
// to date (mu held).
func (m *Manager) buildScoped(ss *scopeSub, name string, over *routev3.RouteConfiguration, commit bool) error {
	scopes := m.scopesOf(ss)
	names := map[string]bool{}
	for _, sc := range scopes {
		if sc.GetRouteConfiguration() == nil && sc.GetRouteConfigurationName() != "" {
			names[sc.GetRouteConfigurationName()] = true
		}
	}
	routes := map[string]*routev3.RouteConfiguration{}
	for n := range names {
		if n == name && over != nil {
			routes[n] = over
		} else if e := m.routes[n]; e != nil && e.rc != nil {
			routes[n] = e.rc
		}
	}
	do, err := ss.sub.Update(scopes, routes)
	if err != nil {
		return err
	}
	if commit {
		do()
		m.setScopeNames(ss, names)
	}
	return nil
}

// setScopeNames records which route configurations ss needs (mu held).
func (m *Manager) setScopeNames(ss *scopeSub, names map[string]bool) {
	for n := range ss.names {
		if !names[n] {
			if e := m.routes[n]; e != nil {
				delete(e.scoped, ss)
			}
		}
	}
	ss.names = names
	if !m.scoped[ss] {
		return // not registered yet: registerScopes adds the entries
	}
	for n := range names {
		m.entry(n).scoped[ss] = true
	}
}

// registerScopes starts a listener's scoped subscriptions (mu held).
func (m *Manager) registerScopes(scopes []*scopeSub) {
	for _, ss := range scopes {
		m.scoped[ss] = true
		for n := range ss.names {
			m.entry(n).scoped[ss] = true
		}
	}
}

// unregisterScopes ends them (mu held).
func (m *Manager) unregisterScopes(scopes []*scopeSub) {
	for _, ss := range scopes {
		delete(m.scoped, ss)
		for n := range ss.names {
			if e := m.routes[n]; e != nil {
				delete(e.scoped, ss)
			}
		}
	}
}

// scopesReady reports whether a listener's scoped subscriptions have
// their scopes (inline, or SRDS has answered).
func (m *Manager) scopesReady(scopes []*scopeSub) bool {
	for _, ss := range scopes {
		if ss.sub.Inline == nil && !m.srdsArrived {
			return false
		}
	}
	return true
}

// scopeSourcesChanged watches exactly the SRDS sources in use (mu held).
func (m *Manager) scopeSourcesChanged() {
	sources := map[string]*corev3.ConfigSource{}
	for ss := range m.scoped {
		if ss.sub.SRDS != nil {
			sources[config.SourceKey(ss.sub.SRDS)] = ss.sub.SRDS
		}
	}
	if m.o.WatchScopes == nil {
		return
	}
	for k, src := range m.srdsSrc {
		if sources[k] == nil {
			m.o.WatchScopes(src, false)
			delete(m.srdsSrc, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(sources)) {
		if m.srdsSrc[k] == nil {
			m.srdsSrc[k] = sources[k]
			m.o.WatchScopes(sources[k], true)
		}
	}
}

// ApplySRDS applies the complete set of scoped route configurations:
// each scope is checked by itself (valid, not on demand, a key no other
// scope has) and refused by name if not; every scoped connection manager
// on SRDS is rebuilt with the rest and its route configurations are
// asked for. Listeners waiting for their scopes open.
func (m *Manager) ApplySRDS(set map[string]*config.Resource) map[string]error {
	m.mu.Lock()
	defer m.unlock()
	errs := map[string]error{}
	keys := map[string]string{}
	next := map[string]*config.Resource{}
	names := slices.Sorted(maps.Keys(set))
	sort.Strings(names)
	for _, name := range names {
		r := set[name]
		sc := r.Message.(*routev3.ScopedRouteConfiguration)
		err := config.Join(config.ValidationErrors(sc.ValidateAll()))
		switch {
		case err != nil:
		case sc.GetOnDemand():
			err = config.At("on_demand", fmt.Errorf("not supported yet"))
		default:
			k := router.ScopeKey(sc)
			if other, dup := keys[k]; dup {
				err = config.At("key", fmt.Errorf("scope %q has the same key", other))
			}
			keys[k] = name
		}
		if err != nil {
			errs[name] = fmt.Errorf("scoped route configuration %q: %w", name, err)
			if old := m.srds[name]; old != nil {
				next[name] = old
			}
			continue
		}
		next[name] = r
	}
	m.srds, m.srdsArrived = next, true
	for ss := range m.scoped {
		if ss.sub.Inline != nil {
			continue
		}
		if err := m.buildScoped(ss, "", nil, true); err != nil {
			m.log.Warn("scoped routes not rebuilt", "err", err)
		}
	}
	m.log.Debug("scoped routes updated", "scopes", len(next))
	m.routesChanged()
	m.activateWarm()
	return errs
}
