package test

import (
	"io"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/straitproxy/strait/internal/testutil"
)

// scrape parses /stats/prometheus with Prometheus's own parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("exposition does not parse: %v", err)
	}
	return fams
}

func metric(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func TestPrometheusCountsExactly(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	const ok, missing = 37, 5
	for i := 0; i < ok; i++ {
		get(t, p.url("ingress")+"/x")
	}
	for i := 0; i < missing; i++ {
		get(t, p.url("ingress")+"/status/404")
	}
	// A stream's counters are final once it finished, a moment after the
	// client has its last byte.
	p.settle()
	fams := scrape(t, p.admin())
	hcm := map[string]string{"envoy_http_conn_manager_prefix": "ingress"}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"envoy_http_downstream_rq_total", hcm, ok + missing},
		{"envoy_http_downstream_rq_xx", map[string]string{"envoy_http_conn_manager_prefix": "ingress", "envoy_response_code_class": "2"}, ok},
		{"envoy_http_downstream_rq_xx", map[string]string{"envoy_http_conn_manager_prefix": "ingress", "envoy_response_code_class": "4"}, missing},
		{"envoy_http_downstream_rq_time", hcm, ok + missing},
		{"envoy_cluster_upstream_rq_total", map[string]string{"envoy_cluster_name": "backend"}, ok + missing},
		{"envoy_http_downstream_rq_active", hcm, 0},
	}
	for _, c := range checks {
		if got := metric(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The text and JSON forms answer too.
	for _, path := range []string{"/stats", "/stats?format=json", "/clusters", "/ready", "/config_dump"} {
		resp, err := http.Get(p.admin() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Errorf("%s: %d, %d bytes", path, resp.StatusCode, len(b))
		}
	}
}
