package stats

import (
	"strings"
	"testing"
)

// Forget drops a scope's metrics, its children's and its derived ones
// (response classes, functions), and nothing of a sibling whose name
// extends its own.
func TestForget(t *testing.T) {
	s := NewStore()
	root := s.Root()
	c1 := root.Scope("cluster", "envoy_cluster_name", "c1")
	c1x := root.Scope("cluster", "envoy_cluster_name", "c1.x")
	c1.Counter("upstream_rq_total").Inc()
	c1.Counter("upstream_rq_2xx").Inc()
	c1.Gauge("upstream_cx_active").Set(1)
	c1.Histogram("upstream_rq_time").Observe(1)
	c1.GaugeFunc("membership_total", func() int64 { return 1 })
	c1.Scope("circuit_breakers", "", "default").Gauge("rq_open")
	c1x.Counter("upstream_rq_total").Add(7)
	root.Counter("cluster_manager.cds.update_success").Inc()

	held := c1.Counter("upstream_rq_total")
	c1.Forget()
	for _, n := range []string{"cluster.c1.upstream_rq_total", "cluster.c1.upstream_rq_2xx", "cluster.c1.upstream_cx_active",
		"cluster.c1.membership_total", "cluster.c1.circuit_breakers.default.rq_open"} {
		if _, ok := s.Lookup(n); ok {
			t.Errorf("%s is still listed", n)
		}
	}
	var out strings.Builder
	s.WriteText(&out, Query{})
	if strings.Contains(out.String(), "cluster.c1.upstream_rq_time") {
		t.Error("the histogram is still listed")
	}
	if v, ok := s.Lookup("cluster.c1.x.upstream_rq_total"); !ok || v != 7 {
		t.Errorf("the sibling c1.x lost its counter (%d, %v)", v, ok)
	}
	if _, ok := s.Lookup("cluster_manager.cds.update_success"); !ok {
		t.Error("an unrelated counter went")
	}
	held.Inc() // whoever holds a forgotten counter may still count
	if c := c1.Counter("upstream_rq_total"); c == held || c.Value() != 0 {
		t.Error("a cluster of the same name, later, does not start from zero")
	}
}
