package stats

import (
	"strings"
	"testing"
)

func TestNamesAndPrometheusLabels(t *testing.T) {
	s := NewStore()
	sc := s.Root().Scope("cluster", "envoy_cluster_name", "backend")
	sc.Counter("upstream_rq_total").Add(3)
	sc.Counter("upstream_rq_2xx").Inc()
	sc.Gauge("upstream_cx_active").Set(2)
	if sc.Counter("upstream_rq_total") != sc.Counter("upstream_rq_total") {
		t.Fatal("the same name made two counters")
	}
	var text, prom strings.Builder
	s.WriteText(&text, Query{})
	s.WritePrometheus(&prom)
	for _, want := range []string{"cluster.backend.upstream_rq_total: 3\n", "cluster.backend.upstream_rq_2xx: 1\n", "cluster.backend.upstream_cx_active: 2\n"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	for _, want := range []string{
		"# TYPE envoy_cluster_upstream_rq_total counter\n",
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 3`,
		`envoy_cluster_upstream_rq_xx{envoy_cluster_name="backend",envoy_response_code_class="2"} 1`,
		`envoy_cluster_upstream_cx_active{envoy_cluster_name="backend"} 2`,
	} {
		if !strings.Contains(prom.String(), want) {
			t.Errorf("prometheus lacks %q:\n%s", want, prom.String())
		}
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for i := 0; i < 100; i++ {
		h.Observe(float64(i % 10)) // 0..9 ms
	}
	if h.Count() != 100 {
		t.Fatalf("count %d", h.Count())
	}
	cum := h.Cumulative()
	if cum[len(cum)-1] != 100 || cum[0] != 10 { // only the 0 ms values are <= 0.5
		t.Fatalf("cumulative %v", cum)
	}
	if q := h.Quantile(0.5); q < 1 || q > 10 {
		t.Fatalf("p50 %v out of range", q)
	}
}

func BenchmarkCounterInc(b *testing.B) {
	c := NewStore().Root().Counter("x")
	b.ReportAllocs()
	for b.Loop() {
		c.Inc()
	}
}
