package upstream

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
)

// weightedLB picks by the hint's random number in proportion to weight
// (the package's tests register a fixed balancer; the real ones are
// extensions).
type weightedLB struct{}

func (weightedLB) Pick(hs *HostSet, hint *PickHint) *Host {
	return hs.Hosts[hs.PickByWeight((hint.Random&0xFFFFFFFF)%hs.TotalWeight)]
}

func edsCluster(t *testing.T, extra string) *Cluster {
	t.Helper()
	var cl clusterv3.Cluster
	js := `{"name":"c","type":"EDS","eds_cluster_config":{"eds_config":{"ads":{}}}` + extra + `}`
	if err := protojson.Unmarshal([]byte(js), &cl); err != nil {
		t.Fatal(err)
	}
	c, err := BuildCluster(&cl, stats.NewStore().Root(), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	c.lb = weightedLB{}
	return c
}

func cla(t *testing.T, js string) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	var a endpointv3.ClusterLoadAssignment
	if err := protojson.Unmarshal([]byte(js), &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func ep(addr string, port int, extra string) string {
	return fmt.Sprintf(`{"endpoint":{"address":{"socket_address":{"address":%q,"port_value":%d}}}%s}`, addr, port, extra)
}

func apply(t *testing.T, c *Cluster, a *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	p, err := c.PrepareAssignment(a)
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyAssignment(p)
}

// picks counts where n picks go, by address.
func picks(c *Cluster, n int) map[string]int {
	out := map[string]int{}
	for i := range n {
		// Low bits pick the host, high bits the priority: both sweep
		// their range evenly.
		r := uint64(i*loadScale/n)<<40 | uint64(uint32(i*2654435761))
		h := c.Pick(&PickHint{Random: r})
		if h == nil {
			out["none"]++
			continue
		}
		out[h.Addr]++
	}
	return out
}

func TestEDSWarmsAndExcludesUnhealthy(t *testing.T) {
	c := edsCluster(t, "")
	if c.HasEndpoints() || c.EDSName != "c" || c.EDSFetchTimeout.Seconds() != 15 {
		t.Fatalf("fresh EDS cluster: has=%v name=%q timeout=%v", c.HasEndpoints(), c.EDSName, c.EDSFetchTimeout)
	}
	if c.Pick(nil) != nil {
		t.Fatal("picked a host before endpoints arrived")
	}
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+
		ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, `,"health_status":"UNHEALTHY"`)+`,`+
		ep("127.0.0.1", 3, `,"health_status":"DRAINING"`)+`,`+ep("127.0.0.1", 4, `,"health_status":"HEALTHY"`)+`]}]}`))
	if !c.HasEndpoints() {
		t.Fatal("HasEndpoints false after the assignment")
	}
	got := picks(c, 100)
	if got["127.0.0.1:1"] != 50 || got["127.0.0.1:4"] != 50 {
		t.Fatalf("picks %v, want only :1 and :4, evenly", got)
	}
	if c.Stats.MembershipTotal.Value() != 4 || c.Stats.MembershipHealthy.Value() != 2 {
		t.Fatalf("membership %d/%d, want 4 total, 2 healthy", c.Stats.MembershipTotal.Value(), c.Stats.MembershipHealthy.Value())
	}
}

func TestEDSReusesUnchangedHosts(t *testing.T) {
	c := edsCluster(t, "")
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, "")+`]}]}`))
	h1 := c.Hosts().Hosts[0]
	h2 := c.Hosts().Hosts[1]
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 3, "")+`]}]}`))
	if c.Hosts().Hosts[0] != h1 {
		t.Fatal("an unchanged endpoint got a new host (its connections would be lost)")
	}
	if !h2.removed.Load() || h1.removed.Load() {
		t.Fatal("the endpoint that left is not marked removed, or the kept one is")
	}
}

// TestEDSReweightsInPlace: an endpoint whose only change is its weight
// keeps its host (connections, counters, outlier state), as in Envoy, and
// the new weight is what the balancer sees.
func TestEDSReweightsInPlace(t *testing.T) {
	c := edsCluster(t, "")
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, "")+`]}]}`))
	h1 := c.Hosts().Hosts[0]
	h1.RqTotal.Add(5)
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+ep("127.0.0.1", 1, `,"load_balancing_weight":3`)+`,`+ep("127.0.0.1", 2, "")+`]}]}`))
	if c.Hosts().Hosts[0] != h1 || h1.removed.Load() || h1.RqTotal.Load() != 5 {
		t.Fatal("a reweighted endpoint got a new host (its connections and state would be lost)")
	}
	if h1.Weight() != 3 {
		t.Fatalf("weight %d, want 3", h1.Weight())
	}
	if got := picks(c, 400); got["127.0.0.1:1"] != 300 || got["127.0.0.1:2"] != 100 {
		t.Fatalf("picks %v, want 300 and 100", got)
	}
}

func TestEDSPriorities(t *testing.T) {
	c := edsCluster(t, "")
	// Priority 0 has 1 healthy of 4: health 1.4*25% = 35%; priority 1
	// takes the other 65%.
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"priority":0,"lb_endpoints":[`+
		ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, `,"health_status":"UNHEALTHY"`)+`,`+
		ep("127.0.0.1", 3, `,"health_status":"UNHEALTHY"`)+`,`+ep("127.0.0.1", 4, `,"health_status":"UNHEALTHY"`)+
		`]},{"priority":1,"lb_endpoints":[`+ep("127.0.0.1", 5, "")+`]}]}`))
	got := picks(c, 10000)
	if p0 := got["127.0.0.1:1"]; p0 < 3200 || p0 > 3800 {
		t.Fatalf("priority 0 got %d of 10000, want about 3500 (%v)", p0, got)
	}
	// All healthy at priority 0: it takes everything.
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"priority":0,"lb_endpoints":[`+ep("127.0.0.1", 1, "")+
		`]},{"priority":1,"lb_endpoints":[`+ep("127.0.0.1", 5, "")+`]}]}`))
	if got := picks(c, 1000); got["127.0.0.1:1"] != 1000 {
		t.Fatalf("healthy priority 0 should take all traffic: %v", got)
	}
	// Overprovisioning factor 100: 1 of 2 healthy is 50%.
	apply(t, c, cla(t, `{"cluster_name":"c","policy":{"overprovisioning_factor":100},"endpoints":[{"priority":0,"lb_endpoints":[`+
		ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, `,"health_status":"UNHEALTHY"`)+
		`]},{"priority":1,"lb_endpoints":[`+ep("127.0.0.1", 5, "")+`]}]}`))
	if p0 := picks(c, 10000)["127.0.0.1:1"]; p0 < 4700 || p0 > 5300 {
		t.Fatalf("priority 0 got %d of 10000 with factor 100, want about 5000", p0)
	}
}

func TestPriorityLoadNormalised(t *testing.T) {
	// Two priorities each 1 of 4 healthy: health 35% each, 70% in total,
	// scaled up to 50/50.
	got := priorityLoad([]level{{total: 4, healthy: 1}, {total: 4, healthy: 1}}, 140)
	if got[0] != 5000 || got[1] != loadScale {
		t.Fatalf("cumulative load %v, want [5000 10000]", got)
	}
	if got := priorityLoad([]level{{total: 2, healthy: 0}}, 140); got[0] != 0 {
		t.Fatalf("no healthy host: load %v", got)
	}
}

func TestEDSLocalityWeights(t *testing.T) {
	c := edsCluster(t, `,"common_lb_config":{"locality_weighted_lb_config":{}}`)
	// Locality a (weight 1) has two hosts, locality b (weight 3) one:
	// b's host gets 3/4 of the traffic, a's hosts 1/8 each.
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[`+
		`{"locality":{"zone":"a"},"load_balancing_weight":1,"lb_endpoints":[`+ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, "")+`]},`+
		`{"locality":{"zone":"b"},"load_balancing_weight":3,"lb_endpoints":[`+ep("127.0.0.1", 3, "")+`]}]}`))
	got := picks(c, 8000)
	if near := func(v, want int) bool { return v > want*9/10 && v < want*11/10 }; !near(got["127.0.0.1:3"], 6000) || !near(got["127.0.0.1:1"], 1000) || !near(got["127.0.0.1:2"], 1000) {
		t.Fatalf("picks %v, want :3 about 6000, :1 and :2 about 1000 each", got)
	}
}

// TestEDSLocalityShares: locality shares do not depend on how many
// endpoints a locality has, and a health change does not replace the
// hosts (their connections stay).
func TestEDSLocalityShares(t *testing.T) {
	c := edsCluster(t, `,"common_lb_config":{"locality_weighted_lb_config":{}}`)
	var many []string
	for i := range 50 {
		many = append(many, ep("127.0.0.2", 1000+i, ""))
	}
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[`+
		`{"locality":{"zone":"a"},"load_balancing_weight":1,"lb_endpoints":[`+strings.Join(many, ",")+`]},`+
		`{"locality":{"zone":"b"},"load_balancing_weight":1,"lb_endpoints":[`+ep("127.0.0.1", 3, "")+`]}]}`))
	got := picks(c, 10000)
	if v := got["127.0.0.1:3"]; v < 4700 || v > 5300 {
		t.Fatalf("the one-host locality got %d of 10000, want about half", v)
	}
	h := c.Hosts().All[0]
	many[1] = ep("127.0.0.2", 1001, `,"health_status":"UNHEALTHY"`)
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[`+
		`{"locality":{"zone":"a"},"load_balancing_weight":1,"lb_endpoints":[`+strings.Join(many, ",")+`]},`+
		`{"locality":{"zone":"b"},"load_balancing_weight":1,"lb_endpoints":[`+ep("127.0.0.1", 3, "")+`]}]}`))
	if c.Hosts().All[0] != h {
		t.Fatal("a health change elsewhere in the locality replaced a host")
	}
}

func TestEDSBadAssignment(t *testing.T) {
	c := edsCluster(t, "")
	_, err := c.PrepareAssignment(cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"127.0.0.1","named_port":"http"}}}}]}]}`))
	if err == nil || !strings.Contains(err.Error(), "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.named_port: not supported") {
		t.Fatalf("err %v", err)
	}
	if c.HasEndpoints() {
		t.Fatal("a refused assignment counted as arrived")
	}
}

func BenchmarkApply10kEndpoints(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"cluster_name":"c","endpoints":[{"lb_endpoints":[`)
	for i := range 10000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(ep(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), 80+i%2, ""))
	}
	sb.WriteString(`]}]}`)
	var a endpointv3.ClusterLoadAssignment
	if err := protojson.Unmarshal([]byte(sb.String()), &a); err != nil {
		b.Fatal(err)
	}
	var cl clusterv3.Cluster
	protojson.Unmarshal([]byte(`{"name":"c","type":"EDS","eds_cluster_config":{"eds_config":{"ads":{}}}}`), &cl)
	c, _ := BuildCluster(&cl, stats.NewStore().Root(), slog.Default())
	defer c.Stop()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p, err := c.PrepareAssignment(&a)
		if err != nil {
			b.Fatal(err)
		}
		c.ApplyAssignment(p)
	}
}

// TestHealthyPanicThreshold: below the panic threshold (Envoy's default
// 50%) a priority balances over all its hosts, healthy or not, and
// counts lb_healthy_panic; threshold 0 never panics; while the total
// health is 100% no priority panics; when every priority panics, load
// follows host counts.
func TestHealthyPanicThreshold(t *testing.T) {
	unhealthy := `,"health_status":"UNHEALTHY"`
	oneOfFour := cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+
		ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, unhealthy)+`,`+
		ep("127.0.0.1", 3, unhealthy)+`,`+ep("127.0.0.1", 4, unhealthy)+`]}]}`)
	c := edsCluster(t, "")
	apply(t, c, oneOfFour)
	got := picks(c, 1000)
	if len(got) != 4 || got["127.0.0.1:2"] != 250 {
		t.Fatalf("1 of 4 healthy under the default threshold: picks %v, want all four evenly", got)
	}
	if n := c.Stats.LBHealthyPanic.Value(); n != 1000 {
		t.Fatalf("lb_healthy_panic %d, want 1000", n)
	}
	if c.Stats.MembershipHealthy.Value() != 1 {
		t.Fatalf("membership_healthy %d in panic, want 1", c.Stats.MembershipHealthy.Value())
	}

	c = edsCluster(t, `,"common_lb_config":{"healthy_panic_threshold":{"value":0}}`)
	apply(t, c, oneOfFour)
	if got := picks(c, 100); got["127.0.0.1:1"] != 100 || c.Stats.LBHealthyPanic.Value() != 0 {
		t.Fatalf("threshold 0: picks %v, panics %d; want only the healthy host", got, c.Stats.LBHealthyPanic.Value())
	}
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+ep("127.0.0.1", 2, unhealthy)+`]}]}`))
	if got := picks(c, 10); got["none"] != 10 {
		t.Fatalf("threshold 0, nothing healthy: picks %v, want none", got)
	}

	// 30%: 1 of 4 (25%) panics, 2 of 4 (50%) does not.
	c = edsCluster(t, `,"common_lb_config":{"healthy_panic_threshold":{"value":30}}`)
	apply(t, c, oneOfFour)
	if got := picks(c, 100); len(got) != 4 {
		t.Fatalf("threshold 30, 25%% healthy: picks %v, want all four", got)
	}
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+
		ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, "")+`,`+
		ep("127.0.0.1", 3, unhealthy)+`,`+ep("127.0.0.1", 4, unhealthy)+`]}]}`))
	if got := picks(c, 100); got["127.0.0.1:1"] != 50 || got["127.0.0.1:2"] != 50 {
		t.Fatalf("threshold 30, 50%% healthy: picks %v, want the two healthy hosts", got)
	}

	// DRAINING endpoints are left out of the share: 1 healthy of 1
	// counted is no panic.
	c = edsCluster(t, "")
	draining := `,"health_status":"DRAINING"`
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+
		ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, draining)+`,`+ep("127.0.0.1", 3, draining)+`]}]}`))
	if got := picks(c, 100); got["127.0.0.1:1"] != 100 || c.Stats.LBHealthyPanic.Value() != 0 {
		t.Fatalf("draining hosts: picks %v, panics %d; want the healthy host only", got, c.Stats.LBHealthyPanic.Value())
	}

	// Factor 100: priority 0 is 25% healthy (in panic, over all four),
	// priority 1 50% (not), total 75%: they split 1:2, priority 1 over its
	// healthy hosts only.
	apply(t, c, cla(t, `{"cluster_name":"c","policy":{"overprovisioning_factor":100},"endpoints":[{"priority":0,"lb_endpoints":[`+
		ep("127.0.0.1", 1, "")+`,`+ep("127.0.0.1", 2, unhealthy)+`,`+ep("127.0.0.1", 3, unhealthy)+`,`+ep("127.0.0.1", 4, unhealthy)+
		`]},{"priority":1,"lb_endpoints":[`+ep("127.0.0.1", 5, "")+`,`+ep("127.0.0.1", 6, "")+`,`+
		ep("127.0.0.1", 7, unhealthy)+`,`+ep("127.0.0.1", 8, unhealthy)+`]}]}`))
	got = picks(c, 12000)
	if p2 := got["127.0.0.1:2"]; p2 < 800 || p2 > 1200 || got["127.0.0.1:7"] != 0 || got["127.0.0.1:5"] < 3600 || got["127.0.0.1:5"] > 4400 {
		t.Fatalf("partial panic: %v; want about 1000 on each priority 0 host, 4000 on each healthy priority 1 host", got)
	}

	// Priority 0 has nothing healthy but priority 1 is whole: total
	// health 100%, no panic, priority 1 takes everything.
	c = edsCluster(t, "")
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"priority":0,"lb_endpoints":[`+
		ep("127.0.0.1", 1, unhealthy)+`]},{"priority":1,"lb_endpoints":[`+ep("127.0.0.1", 5, "")+`]}]}`))
	if got := picks(c, 100); got["127.0.0.1:5"] != 100 {
		t.Fatalf("whole priority 1: picks %v", got)
	}
	// Nothing healthy anywhere: both priorities panic and split by host
	// count, 1 host against 3.
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"priority":0,"lb_endpoints":[`+
		ep("127.0.0.1", 1, unhealthy)+`]},{"priority":1,"lb_endpoints":[`+ep("127.0.0.1", 5, unhealthy)+`,`+
		ep("127.0.0.1", 6, unhealthy)+`,`+ep("127.0.0.1", 7, unhealthy)+`]}]}`))
	got = picks(c, 10000)
	if p0 := got["127.0.0.1:1"]; p0 < 2300 || p0 > 2700 || got["none"] != 0 {
		t.Fatalf("total panic: priority 0 got %d of 10000, want about 2500 (%v)", p0, got)
	}
}
