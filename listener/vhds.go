package listener

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// VHDS, as Envoy has it: a route configuration with vhds subscribes, over
// delta xDS, to its own name (the server sends the virtual hosts it
// thinks useful, named "<route configuration>/<host>") and, on demand,
// to "<route configuration>/<host>" for a request whose host no virtual
// host matches. The virtual hosts VHDS delivers join the route
// configuration's own, by name, until VHDS removes them; an RDS update
// keeps them (a changed vhds config source starts again). A listener
// whose route configuration has vhds warms until the first VHDS answer
// (or the source's initial_fetch_timeout).

// maxOnDemand bounds the hosts one route configuration has asked for on
// demand and not had answered (the Host header is the client's to
// choose); a host the server answered with a virtual host stays
// subscribed, one it does not know is forgotten with its answer.
const maxOnDemand = 1024

// reaskAfter is how soon a host asked for on demand and not answered may
// be asked for again (a server that never answers, as go-control-plane
// for a name it lacks, or an answer that went away).
var reaskAfter = time.Second

// vhdsState is a route configuration's VHDS.
type vhdsState struct {
	source *corev3.ConfigSource
	key    string
	// vhosts are the virtual hosts serving, by resource name.
	vhosts map[string]*config.Resource
	// served are the names and aliases of the virtual hosts serving: a
	// host among them that still did not route is not asked for again.
	served  map[string]bool
	arrived bool
	timer   *time.Timer
	// demanded are the hosts asked for on demand ("<rc>/<host>"), with
	// when; outstanding counts those not served yet.
	demanded map[string]time.Time
	waiters  map[string]map[*chan struct{}]bool
}

// outstanding counts the hosts asked for and not served.
func (vs *vhdsState) outstanding() int {
	n := 0
	for a := range vs.demanded {
		if !vs.served[a] {
			n++
		}
	}
	return n
}

// effective is rc with the VHDS virtual hosts after its own, and no vhds
// (what the connection managers compile).
func effective(rc *routev3.RouteConfiguration, vhosts map[string]*config.Resource) *routev3.RouteConfiguration {
	if rc.GetVhds() == nil && len(vhosts) == 0 {
		return rc
	}
	out := proto.Clone(rc).(*routev3.RouteConfiguration)
	out.Vhds = nil
	for _, n := range slices.Sorted(maps.Keys(vhosts)) {
		out.VirtualHosts = append(out.VirtualHosts, vhosts[n].Message.(*routev3.VirtualHost))
	}
	return out
}

// dumped is what the config dump shows: the route configuration as it
// serves, its vhds kept.
func (e *routeEntry) dumped() *config.Resource {
	if e.res == nil || e.vhds == nil || len(e.vhds.vhosts) == 0 {
		return e.res
	}
	rc := proto.Clone(e.rc).(*routev3.RouteConfiguration)
	rc.Vhds = e.res.Message.(*routev3.RouteConfiguration).GetVhds()
	a, err := anypb.New(rc)
	if err != nil {
		return e.res
	}
	r := *e.res
	r.Message, r.Any = rc, a
	return &r
}

// nextVHDS is the VHDS state a route configuration version rc gives e: the
// current one when the config source is unchanged, a new one when it
// changed, nil without vhds (mu held).
func (m *Manager) nextVHDS(e *routeEntry, rc *routev3.RouteConfiguration) (*vhdsState, error) {
	v := rc.GetVhds()
	if v == nil {
		return nil, nil
	}
	cs := v.GetConfigSource()
	if m.o.CheckVHDS == nil {
		return nil, config.At("vhds", fmt.Errorf("needs dynamic_resources"))
	}
	if err := m.o.CheckVHDS(cs); err != nil {
		return nil, config.At("vhds.config_source", err)
	}
	key := config.SourceKey(cs)
	if e.vhds != nil && e.vhds.key == key {
		return e.vhds, nil
	}
	return &vhdsState{source: cs, key: key, vhosts: map[string]*config.Resource{}, served: map[string]bool{},
		demanded: map[string]time.Time{}, waiters: map[string]map[*chan struct{}]bool{}}, nil
}

// setVHDS installs e's VHDS state (mu held): the old one ends (its
// waiters route again), the new one warms until its first answer.
func (m *Manager) setVHDS(e *routeEntry, name string, vs *vhdsState) {
	if e.vhds == vs {
		return
	}
	m.endVHDS(e)
	e.vhds = vs
	if vs != nil {
		if d := fetchTimeout(vs.source); d > 0 {
			vs.timer = time.AfterFunc(d, func() {
				m.mu.Lock()
				defer m.unlock()
				if e.vhds == vs && !vs.arrived {
					m.log.Warn("VHDS initial fetch timed out", "route_config", name)
					vs.arrived = true
					m.activateWarm()
				}
			})
		}
	}
	m.vhdsChanged()
}

// endVHDS ends e's VHDS (mu held).
func (m *Manager) endVHDS(e *routeEntry) {
	vs := e.vhds
	if vs == nil {
		return
	}
	stopTimer(vs.timer)
	for _, ws := range vs.waiters {
		for w := range ws {
			close(*w)
		}
	}
	vs.waiters = nil
	e.vhds = nil
}

// vhdsChanged subscribes to exactly the virtual hosts the route
// configurations want: each one's own name, and the hosts asked for on
// demand (mu held).
func (m *Manager) vhdsChanged() {
	names := map[string]*corev3.ConfigSource{}
	for name, e := range m.routes {
		if vs := e.vhds; vs != nil {
			names[name] = vs.source
			for a := range vs.demanded {
				names[a] = vs.source
			}
		}
	}
	if m.o.WatchVirtualHosts != nil {
		m.vhds.Set(names, false, m.o.WatchVirtualHosts)
	}
}

// owners are the route configurations with VHDS that a virtual host
// resource is for: by its name (the route configuration's own, or its
// namespace) or one of its aliases (mu held).
func (m *Manager) owners(name string, aliases []string) []string {
	var out []string
	add := func(n string) {
		if e := m.routes[n]; e != nil && e.vhds != nil && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	add(name)
	add(config.Namespace(name))
	for _, a := range aliases {
		add(config.Namespace(a))
	}
	return out
}

// ApplyVHDS applies the complete set of virtual hosts: each route
// configuration with VHDS takes those named for it, compiled with its own
// for every connection manager that uses it. A virtual host that cannot
// join (invalid, a name or domain another has, or it fails to compile)
// is refused by name (its previous version, or none, stays); the rest
// apply. Requests waiting for a host the answer names route again (the
// server's empty answer for a host it does not know also releases them,
// and the host is forgotten); a listener waiting for its route
// configuration's first VHDS answer opens.
func (m *Manager) ApplyVHDS(set map[string]*config.Resource) map[string]error {
	m.mu.Lock()
	defer m.unlock()
	errs := map[string]error{}
	want := map[string]map[string]*config.Resource{}
	answered := map[string]map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(set)) {
		r := set[name]
		for _, rc := range m.owners(name, r.Aliases) {
			if answered[rc] == nil {
				answered[rc] = map[string]bool{}
				want[rc] = map[string]*config.Resource{}
			}
			answered[rc][name] = true
			for _, a := range r.Aliases {
				answered[rc][a] = true
			}
			if r.Message != nil {
				want[rc][name] = r
			}
		}
	}
	changed := false
	for _, rc := range slices.Sorted(maps.Keys(m.routes)) {
		e := m.routes[rc]
		vs := e.vhds
		if vs == nil {
			continue
		}
		if answered[rc] != nil {
			vs.arrived = true // its subscription had an answer
		}
		if e.res != nil && !sameSet(vs.vhosts, want[rc]) {
			m.installVHosts(e, rc, want[rc], errs)
		}
		vs.served = map[string]bool{}
		for n, r := range vs.vhosts {
			vs.served[n] = true
			for _, a := range r.Aliases {
				vs.served[a] = true
			}
		}
		for a := range answered[rc] {
			if ws := vs.waiters[a]; ws != nil {
				for w := range ws {
					close(*w)
				}
				delete(vs.waiters, a)
			}
			if _, asked := vs.demanded[a]; asked && !vs.served[a] {
				// Not known to the server (or refused): forget it, so
				// that the next request asks again.
				delete(vs.demanded, a)
				changed = true
			}
		}
	}
	if changed {
		m.vhdsChanged()
	}
	m.activateWarm()
	return errs
}

// same reports whether a and b are the same virtual host version.
func same(a, b *config.Resource) bool {
	return a == b || a != nil && b != nil && proto.Equal(a.Message, b.Message)
}

func sameSet(a, b map[string]*config.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	for n, r := range a {
		if b[n] != r {
			return false
		}
	}
	return true
}

// installVHosts moves e to the virtual hosts want (mu held). Each new or
// changed virtual host is first checked by itself (valid, a name the
// route configuration's own do not use, domains no other has); those
// that fail are refused, the rest compiled once. Only when that fails
// too are changes left out one at a time.
func (m *Manager) installVHosts(e *routeEntry, name string, want map[string]*config.Resource, errs map[string]error) {
	rc := e.res.Message.(*routev3.RouteConfiguration)
	cur := e.vhds.vhosts
	refuse := func(n string, err error) {
		errs[n] = fmt.Errorf("virtual host %q for route configuration %q: %w", n, name, err)
	}
	// Domains and names taken by the route configuration's own virtual
	// hosts and by VHDS's that do not change.
	names, domains := map[string]bool{}, map[string]string{}
	claim := func(owner string, vh *routev3.VirtualHost) string {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			if other, ok := domains[d]; ok && other != owner {
				return fmt.Sprintf("domain %q is also %q's", d, other)
			}
		}
		for _, d := range vh.GetDomains() {
			domains[strings.ToLower(d)] = owner
		}
		return ""
	}
	for _, vh := range rc.GetVirtualHosts() {
		names[vh.GetName()] = true
		claim(vh.GetName(), vh)
	}
	next := map[string]*config.Resource{}
	for n, r := range want {
		if same(cur[n], r) {
			next[n] = r
			claim(n, r.Message.(*routev3.VirtualHost))
		}
	}
	for _, n := range slices.Sorted(maps.Keys(want)) {
		r := want[n]
		if same(cur[n], r) {
			continue
		}
		vh := r.Message.(*routev3.VirtualHost)
		if err := config.Join(config.ValidationErrors(vh.ValidateAll())); err != nil {
			refuse(n, err)
		} else if names[vh.GetName()] {
			refuse(n, fmt.Errorf("the route configuration has a virtual host named %q", vh.GetName()))
		} else if why := claim(n, vh); why != "" {
			refuse(n, errors.New(why))
		} else {
			next[n] = r
			continue
		}
		if old := cur[n]; old != nil {
			next[n] = old // the refused one's previous version stays
		}
	}
	if commit, err := m.compileAll(e, name, effective(rc, next)); err == nil {
		commit()
		e.vhds.vhosts = next
		m.log.Debug("virtual hosts updated", "route_config", name, "vhds", len(next), "refused", len(errs))
		return
	}
	// Something only compiling finds: look for the one change without
	// which the rest compiles; failing that, refuse every change (the
	// serving virtual hosts stay), as Envoy refuses the whole update.
	var changes []string
	for _, n := range slices.Sorted(maps.Keys(next)) {
		if !same(cur[n], next[n]) {
			changes = append(changes, n)
		}
	}
	for _, n := range changes {
		try := maps.Clone(next)
		if old := cur[n]; old != nil {
			try[n] = old
		} else {
			delete(try, n)
		}
		if commit, err := m.compileAll(e, name, effective(rc, try)); err == nil {
			_, cerr := m.compileAll(e, name, effective(rc, next))
			refuse(n, cerr)
			commit()
			e.vhds.vhosts = try
			return
		}
	}
	_, err := m.compileAll(e, name, effective(rc, next))
	for _, n := range changes {
		refuse(n, err)
	}
	m.log.Warn("virtual hosts not updated", "route_config", name, "err", err)
}

// onDemand is a route configuration's filter.VirtualHostDemand.
type onDemand struct {
	m    *Manager
	name string
}

// OnDemand implements filter.RouteSource.
func (r *routeRecorder) OnDemand(name string) filter.VirtualHostDemand {
	return onDemand{m: r.m, name: name}
}

// OnDemand implements filter.RouteSource for a static listener.
func (s *StaticRoutes) OnDemand(name string) filter.VirtualHostDemand { return s.rec.OnDemand(name) }

// Demand implements filter.VirtualHostDemand.
func (d onDemand) Demand(host string) (<-chan struct{}, func(), bool) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.routes[d.name]
	if e == nil || e.vhds == nil || m.stopped {
		return nil, nil, false
	}
	vs := e.vhds
	alias := d.name + "/" + host
	if vs.served[alias] {
		return nil, nil, false // served, and still no route: 404
	}
	asked, ok := vs.demanded[alias]
	switch {
	case !ok:
		if vs.outstanding() >= maxOnDemand {
			m.log.Warn("VHDS on-demand hosts at their bound: not asking", "route_config", d.name, "host", host, "bound", maxOnDemand)
			return nil, nil, false
		}
		vs.demanded[alias] = time.Now()
		m.log.Debug("VHDS on demand", "route_config", d.name, "host", host)
		m.vhdsChanged()
	case len(vs.waiters[alias]) == 0 && time.Since(asked) >= reaskAfter:
		// Asked before and never answered: ask again, as Envoy asks for
		// each request.
		vs.demanded[alias] = time.Now()
		if m.o.AskVirtualHostsAgain != nil {
			m.o.AskVirtualHostsAgain(vs.source, []string{alias})
		}
	}
	ch := make(chan struct{})
	w := &ch
	if vs.waiters[alias] == nil {
		vs.waiters[alias] = map[*chan struct{}]bool{}
	}
	vs.waiters[alias][w] = true
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if ws := vs.waiters[alias]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(vs.waiters, alias)
			}
		}
	}, true
}
