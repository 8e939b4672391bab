package listener

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"

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
}

func newVHDSRig(t *testing.T) *vhdsRig {
	r := &vhdsRig{}
	r.m = NewManager(ManagerOptions{
		Build:             Options{Log: slog.New(slog.DiscardHandler), Stats: stats.NewStore().Root()},
		CheckVHDS:         func(*corev3.ConfigSource) error { return nil },
		WatchVirtualHosts: func(_ *corev3.ConfigSource, names []string) { r.watched = names },
	})
	r.sr = r.m.StaticRoutes()
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	err := r.sr.Subscribe("vr", ads, func(rc *routev3.RouteConfiguration) (func(), error) {
		for _, vh := range rc.GetVirtualHosts() {
			if slices.Contains(vh.GetDomains(), "bad") {
				return nil, fmt.Errorf("virtual host %q is bad", vh.GetName())
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
	if _, _, ok := d.Demand("h.example"); ok {
		t.Fatal("an answered host is asked for again")
	}

	for i := range maxOnDemand {
		if _, c, ok := d.Demand(fmt.Sprintf("n%d.example", i)); ok {
			c()
		}
	}
	if _, _, ok := d.Demand("one-more.example"); ok {
		t.Fatalf("more than %d hosts asked for on demand", maxOnDemand)
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
