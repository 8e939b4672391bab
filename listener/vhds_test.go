package listener

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
)

// vhdsRig is a listener manager with one static subscription to the
// route configuration "vr", recording what it compiles and what VHDS
// names it watches.
type vhdsRig struct {
	m       *Manager
	sr      *StaticRoutes
	last    *routev3.RouteConfiguration
	watched []string
	again   []string
}

func newVHDSRig(t *testing.T) *vhdsRig {
	r := &vhdsRig{}
	r.m = NewManager(ManagerOptions{
		Build:             Options{Log: slog.New(slog.DiscardHandler), Stats: stats.NewStore().Root()},
		CheckVHDS:         func(*corev3.ConfigSource) error { return nil },
		WatchVirtualHosts: func(_ *corev3.ConfigSource, names []string) { r.watched = names },
		AskVirtualHostsAgain: func(_ *corev3.ConfigSource, names []string) {
			r.again = append(r.again, names...)
		},
	})
	r.sr = r.m.StaticRoutes()
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	err := r.sr.Subscribe("vr", ads, func(rc *routev3.RouteConfiguration) (func(), error) {
		seen := map[string]bool{}
		for _, vh := range rc.GetVirtualHosts() {
			if slices.Contains(vh.GetDomains(), "bad") {
				return nil, fmt.Errorf("virtual host %q is bad", vh.GetName())
			}
			for _, d := range vh.GetDomains() {
				if seen[d] {
					return nil, fmt.Errorf("domain %q twice", d)
				}
				seen[d] = true
			}
		}
		return func() { r.last = rc }, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.m.RegisterStatic(r.sr)
	return r
}

func (r *vhdsRig) hosts() []string {
	var out []string
	for _, vh := range r.last.GetVirtualHosts() {
		out = append(out, vh.GetName())
	}
	return out
}

func rcWithVHDS(version string) map[string]*config.Resource {
	rc := &routev3.RouteConfiguration{Name: "vr", Vhds: &routev3.Vhds{ConfigSource: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
		VirtualHosts: []*routev3.VirtualHost{{Name: "own", Domains: []string{"own"}}}}
	return map[string]*config.Resource{"vr": {Name: "vr", Version: version, Message: rc}}
}

func vh(name, domain string) *config.Resource {
	return &config.Resource{Name: name, Message: &routev3.VirtualHost{Name: name, Domains: []string{domain}}}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestVHDSManager: the route configuration's own virtual hosts come
// first, VHDS's after them; an RDS update keeps VHDS's; a bad virtual
// host is refused by name and the rest apply; an on-demand host is
// watched and its waiter released by the server's answer, even an empty
// one, after which the host is not asked for again; the hosts asked for
// are bounded; a route configuration that goes away releases waiters.
func TestVHDSManager(t *testing.T) {
	r := newVHDSRig(t)
	if errs := r.m.ApplyRDS(rcWithVHDS("1")); len(errs) > 0 {
		t.Fatal(errs)
	}
	if !slices.Equal(r.watched, []string{"vr"}) {
		t.Fatalf("watched %v, want [vr]", r.watched)
	}
	errs := r.m.ApplyVHDS(map[string]*config.Resource{"vr/a": vh("vr/a", "a"), "vr/b": vh("vr/b", "bad"), "x/c": vh("x/c", "c")})
	if len(errs) != 1 || errs["vr/b"] == nil {
		t.Fatalf("refused %v, want vr/b only", errs)
	}
	if got := r.hosts(); !slices.Equal(got, []string{"own", "vr/a"}) {
		t.Fatalf("virtual hosts %v", got)
	}
	r.m.ApplyRDS(rcWithVHDS("2"))
	if got := r.hosts(); !slices.Equal(got, []string{"own", "vr/a"}) {
		t.Fatalf("virtual hosts after an RDS update %v", got)
	}

	// A domain moving from one virtual host to another in one update,
	// beside a bad one: the move applies, the bad one is refused.
	r.m.ApplyVHDS(map[string]*config.Resource{"vr/a": vh("vr/a", "a"), "vr/z": vh("vr/z", "d")})
	errs = r.m.ApplyVHDS(map[string]*config.Resource{"vr/a": vh("vr/a", "d"), "vr/z": vh("vr/z", "e"), "vr/q": vh("vr/q", "bad")})
	if len(errs) != 1 || errs["vr/q"] == nil {
		t.Fatalf("refused %v, want vr/q only", errs)
	}
	if got := r.hosts(); !slices.Equal(got, []string{"own", "vr/a", "vr/z"}) || r.last.GetVirtualHosts()[1].GetDomains()[0] != "d" {
		t.Fatalf("virtual hosts %v", got)
	}
	// A new virtual host claiming a domain another serves is refused.
	errs = r.m.ApplyVHDS(map[string]*config.Resource{"vr/a": vh("vr/a", "d"), "vr/z": vh("vr/z", "e"), "vr/y": vh("vr/y", "e")})
	if len(errs) != 1 || errs["vr/y"] == nil {
		t.Fatalf("refused %v, want vr/y", errs)
	}

	d := r.sr.OnDemand("vr")
	done, cancel, ok := d.Demand("h.example")
	if !ok {
		t.Fatal("no on-demand wait")
	}
	defer cancel()
	if !slices.Contains(r.watched, "vr/h.example") {
		t.Fatalf("watched %v, want vr/h.example too", r.watched)
	}
	r.m.ApplyVHDS(map[string]*config.Resource{"vr/a": vh("vr/a", "a")})
	if closed(done) {
		t.Fatal("released by an answer for another host")
	}
	r.m.ApplyVHDS(map[string]*config.Resource{"vr/a": vh("vr/a", "a"), "vr/h.example": {Name: "vr/h.example", Aliases: []string{"vr/h.example"}}})
	if !closed(done) {
		t.Fatal("not released by the server's empty answer")
	}
	if slices.Contains(r.watched, "vr/h.example") {
		t.Fatal("a host the server does not know stays subscribed")
	}
	if _, c, ok := d.Demand("h.example"); !ok || !slices.Contains(r.watched, "vr/h.example") {
		t.Fatal("a host the server did not know is not asked for again")
	} else {
		c()
	}
	// Asked for and never answered: asked again by a later request.
	reaskAfter = 0
	defer func() { reaskAfter = time.Second }()
	if _, c, ok := d.Demand("h.example"); !ok || !slices.Equal(r.again, []string{"vr/h.example"}) {
		t.Fatalf("not asked again: %v", r.again)
	} else {
		c()
	}
	// Served: a request that still does not route is not held.
	r.m.ApplyVHDS(map[string]*config.Resource{"vr/a": vh("vr/a", "a"), "vr/h.example": vh("vr/h.example", "other")})
	if _, _, ok := d.Demand("h.example"); ok {
		t.Fatal("a served host is asked for again")
	}

	// The bound counts hosts not answered; a served one does not count.
	for i := range maxOnDemand {
		if _, c, ok := d.Demand(fmt.Sprintf("n%d.example", i)); ok {
			c()
		}
	}
	if _, _, ok := d.Demand("one-more.example"); ok {
		t.Fatalf("more than %d hosts asked for on demand", maxOnDemand)
	}
	// An answer for another route configuration is not vr's first answer.
	r3 := newVHDSRig(t)
	r3.m.ApplyRDS(rcWithVHDS("1"))
	r3.m.ApplyVHDS(map[string]*config.Resource{"other/x": vh("other/x", "x")})
	if r3.m.routes["vr"].vhds.arrived {
		t.Fatal("vr warmed by an answer that was not for it")
	}
	r3.m.ApplyVHDS(map[string]*config.Resource{"vr/x": vh("vr/x", "x")})
	if !r3.m.routes["vr"].vhds.arrived {
		t.Fatal("vr's answer did not warm it")
	}

	r2 := newVHDSRig(t)
	r2.m.ApplyRDS(rcWithVHDS("1"))
	done, cancel, ok = r2.sr.OnDemand("vr").Demand("z.example")
	if !ok {
		t.Fatal("no on-demand wait")
	}
	defer cancel()
	r2.m.ApplyRDS(map[string]*config.Resource{})
	if !closed(done) {
		t.Fatal("a removed route configuration left its waiter")
	}
	if len(r2.watched) != 0 {
		t.Fatalf("still watching %v", r2.watched)
	}
}
