package upstream

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
)

// odCluster is an EDS cluster of n hosts (10.0.0.1..n:80) with the given
// outlier_detection (JSON); its interval is an hour, so only the test's
// calls of check run it.
func odCluster(t *testing.T, n int, od string) *Cluster {
	t.Helper()
	c := edsCluster(t, `,"outlier_detection":{"interval":"3600s"`+od+`}`)
	var eps []string
	for i := 1; i <= n; i++ {
		eps = append(eps, ep(fmt.Sprintf("10.0.0.%d", i), 80, ""))
	}
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+strings.Join(eps, ",")+`]}]}`))
	return c
}

func host(c *Cluster, i int) *Host { return c.Hosts().All[i] }

func answer(h *Host, code, times int) {
	for range times {
		a := h.Begin()
		a.Answered(code)
		a.End(code < 500)
	}
}

func picked(c *Cluster) map[string]bool {
	m := map[string]bool{}
	for i := range 64 {
		if h := c.Pick(&PickHint{Random: uint64(i) * 0x9e3779b97f4a7c15}); h != nil {
			m[h.Addr] = true
		}
	}
	return m
}

func gauge(c *Cluster, name string) int64 {
	return c.statsScope.Scope("outlier_detection", "", "").Gauge(name).Value()
}

func counter(c *Cluster, name string) uint64 {
	return c.statsScope.Scope("outlier_detection", "", "").Counter(name).Value()
}

func TestOutlierConsecutive5xx(t *testing.T) {
	c := odCluster(t, 4, `,"consecutive_5xx":3,"base_ejection_time":"10s","max_ejection_time":"25s","max_ejection_percent":50`)
	h := host(c, 0)
	// A success between errors starts the run again.
	answer(h, 503, 2)
	answer(h, 200, 1)
	answer(h, 500, 2)
	if h.Ejected() {
		t.Fatal("ejected before 3 consecutive 5xx")
	}
	answer(h, 500, 1)
	if !h.Ejected() || picked(c)[h.Addr] || len(c.Hosts().Hosts) != 3 {
		t.Fatalf("not ejected after 3 consecutive 5xx: ejected %v, picks %v", h.Ejected(), picked(c))
	}
	if h.HealthFlags() != "/failed_outlier_check" || gauge(c, "ejections_active") != 1 ||
		counter(c, "ejections_enforced_consecutive_5xx") != 1 || counter(c, "ejections_detected_consecutive_5xx") != 1 ||
		c.Stats.MembershipHealthy.Value() != 3 {
		t.Fatalf("flags %q, stats active %d enforced %d; membership_healthy %d", h.HealthFlags(),
			gauge(c, "ejections_active"), counter(c, "ejections_enforced_consecutive_5xx"), c.Stats.MembershipHealthy.Value())
	}
	// Back after base_ejection_time, at an interval's check.
	start := h.od.ejectedAt
	c.outlier.interval(start.Add(9 * time.Second))
	if !h.Ejected() {
		t.Fatal("back before base_ejection_time")
	}
	c.outlier.interval(start.Add(10 * time.Second))
	if h.Ejected() || !picked(c)[h.Addr] || gauge(c, "ejections_active") != 0 || h.HealthFlags() != "healthy" {
		t.Fatalf("not back after base_ejection_time: picks %v", picked(c))
	}
	// A second ejection soon after lasts twice as long; the third is
	// capped at max_ejection_time.
	answer(h, 502, 3)
	start = h.od.ejectedAt
	c.outlier.interval(start.Add(19 * time.Second))
	if !h.Ejected() {
		t.Fatal("the second ejection was not longer")
	}
	c.outlier.interval(start.Add(20 * time.Second))
	answer(h, 502, 3)
	start = h.od.ejectedAt
	c.outlier.interval(start.Add(25 * time.Second))
	if h.Ejected() {
		t.Fatal("the third ejection lasted beyond max_ejection_time")
	}
	// A host the assignment drops is no longer counted as ejected.
	answer(h, 500, 3)
	if gauge(c, "ejections_active") != 1 {
		t.Fatal("not ejected again")
	}
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+ep("10.0.0.2", 80, "")+`]}]}`))
	if gauge(c, "ejections_active") != 0 {
		t.Fatalf("ejections_active %d after the ejected host left", gauge(c, "ejections_active"))
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	c := odCluster(t, 3, `,"consecutive_5xx":2,"max_ejection_percent":30`)
	answer(host(c, 0), 500, 2)
	answer(host(c, 1), 500, 2)
	if !host(c, 0).Ejected() || host(c, 1).Ejected() || counter(c, "ejections_overflow") != 1 {
		t.Fatalf("ejected %v %v, overflow %d", host(c, 0).Ejected(), host(c, 1).Ejected(), counter(c, "ejections_overflow"))
	}
	// The default, 10 %, still lets the first host go.
	c = odCluster(t, 2, `,"consecutive_5xx":2`)
	answer(host(c, 1), 500, 2)
	if !host(c, 1).Ejected() {
		t.Fatal("the first ejection under max_ejection_percent 10 did not happen")
	}
}

func TestOutlierGatewayFailure(t *testing.T) {
	// Not enforced by default: detected only.
	c := odCluster(t, 3, `,"consecutive_gateway_failure":2,"consecutive_5xx":100`)
	answer(host(c, 0), 503, 2)
	if host(c, 0).Ejected() || counter(c, "ejections_detected_consecutive_gateway_failure") != 1 {
		t.Fatalf("default enforcing: ejected %v, detected %d", host(c, 0).Ejected(), counter(c, "ejections_detected_consecutive_gateway_failure"))
	}
	c = odCluster(t, 3, `,"consecutive_gateway_failure":2,"enforcing_consecutive_gateway_failure":100,"consecutive_5xx":100`)
	answer(host(c, 0), 500, 1) // not a gateway failure: the run starts again
	answer(host(c, 0), 504, 1)
	if host(c, 0).Ejected() {
		t.Fatal("500 counted as a gateway failure")
	}
	a := host(c, 0).Begin()
	a.Failed(FailTimeout) // a timeout is a 504 without split
	a.End(false)
	if !host(c, 0).Ejected() || counter(c, "ejections_enforced_consecutive_gateway_failure") != 1 {
		t.Fatal("2 consecutive gateway failures did not eject")
	}
}

func TestOutlierLocalOriginSplit(t *testing.T) {
	c := odCluster(t, 3, `,"split_external_local_origin_errors":true,"consecutive_local_origin_failure":2,"consecutive_5xx":2,"max_ejection_percent":100`)
	h := host(c, 0)
	for _, f := range []Failure{FailConnect, FailReset} {
		a := h.Begin()
		a.Failed(f)
		a.End(false)
		if f == FailConnect {
			a = h.Begin()
			a.Connected() // a connection made starts the run again
			a.Answered(500)
			a.End(false)
		}
	}
	if h.Ejected() {
		t.Fatal("ejected: a connect success did not end the local run, or local errors counted as 5xx")
	}
	a := h.Begin()
	a.Failed(FailTimeout)
	a.End(false)
	if !h.Ejected() || counter(c, "ejections_enforced_consecutive_local_origin_failure") != 1 {
		t.Fatal("2 consecutive local-origin failures did not eject")
	}
	// TCP sessions report their connection.
	h2 := host(c, 1)
	h2.ReportConnect(false)
	h2.ReportConnect(false)
	if !h2.Ejected() {
		t.Fatal("tcp connect failures did not eject")
	}
}

func TestOutlierSuccessRate(t *testing.T) {
	c := odCluster(t, 5, `,"consecutive_5xx":1000,"success_rate_request_volume":20,"max_ejection_percent":100`)
	for i := 0; i < 5; i++ {
		answer(host(c, i), 200, 100)
	}
	answer(host(c, 4), 500, 30) // 100/130 = 77 % against 100 %
	answer(host(c, 3), 200, 10)
	c.outlier.interval(time.Now())
	for i := 0; i < 4; i++ {
		if host(c, i).Ejected() {
			t.Fatalf("host %d ejected", i)
		}
	}
	if !host(c, 4).Ejected() || counter(c, "ejections_enforced_success_rate") != 1 {
		t.Fatal("the host with the low success rate was not ejected")
	}
	// Counts are per interval: the next starts afresh (too few requests).
	c.outlier.interval(time.Now())
	if counter(c, "ejections_detected_success_rate") != 1 {
		t.Fatal("the last interval's counts were judged again")
	}
	// Too few hosts with enough requests: no judgement.
	c = odCluster(t, 5, `,"consecutive_5xx":1000,"success_rate_request_volume":20`)
	answer(host(c, 0), 500, 50)
	answer(host(c, 1), 200, 50)
	c.outlier.interval(time.Now())
	if host(c, 0).Ejected() {
		t.Fatal("success rate judged with fewer than success_rate_minimum_hosts hosts")
	}
}

func TestOutlierFailurePercentage(t *testing.T) {
	c := odCluster(t, 2, `,"consecutive_5xx":1000,"enforcing_success_rate":0,"failure_percentage_minimum_hosts":2,
		"failure_percentage_request_volume":10,"failure_percentage_threshold":50,"enforcing_failure_percentage":100,"max_ejection_percent":100`)
	answer(host(c, 0), 200, 10)
	answer(host(c, 0), 503, 10) // 50 % failures: ejected
	answer(host(c, 1), 200, 15)
	answer(host(c, 1), 503, 5)
	c.outlier.interval(time.Now())
	if !host(c, 0).Ejected() || host(c, 1).Ejected() || counter(c, "ejections_enforced_failure_percentage") != 1 {
		t.Fatalf("ejected %v %v", host(c, 0).Ejected(), host(c, 1).Ejected())
	}
}

// TestOutlierPanic: with every host ejected, the cluster is in panic and
// picks among all of them, as Envoy does.
func TestOutlierPanic(t *testing.T) {
	c := odCluster(t, 2, `,"consecutive_5xx":1,"max_ejection_percent":100`)
	answer(host(c, 0), 500, 1)
	answer(host(c, 1), 500, 1)
	if !host(c, 0).Ejected() || !host(c, 1).Ejected() {
		t.Fatal("not both ejected")
	}
	if p := picked(c); len(p) != 2 || !c.Hosts().panic {
		t.Fatalf("picks %v, panic %v", p, c.Hosts().panic)
	}
}

func TestOutlierConfigErrors(t *testing.T) {
	for _, tc := range []struct{ od, want string }{
		{`"base_ejection_time":"60s","max_ejection_time":"30s"`, "outlier_detection.max_ejection_time"},
		{`"enforcing_consecutive_5xx":101`, "enforcing"},
	} {
		_, err := buildClusterJSON(`{"name":"c","type":"EDS","eds_cluster_config":{"eds_config":{"ads":{}}},"outlier_detection":{` + tc.od + `}}`)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.od, err, tc.want)
		}
	}
}

func buildClusterJSON(js string) (*Cluster, error) {
	var cl clusterv3.Cluster
	if err := protojson.Unmarshal([]byte(js), &cl); err != nil {
		return nil, err
	}
	c, err := BuildCluster(&cl, stats.NewStore().Root(), slog.Default())
	if err == nil {
		c.Stop()
	}
	return c, err
}
