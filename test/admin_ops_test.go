package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// adminDo sends method to the admin path and returns status and body.
func adminDo(t *testing.T, method, u string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminOperations drives Envoy's operations endpoints on the
// binary: /server_info, /listeners, /memory, /logging, /stats' filter,
// usedonly and histogram_buckets, the connect-time histogram,
// /healthcheck/fail and /ok against /ready, and /quitquitquit, which
// makes the process drain and exit 0. Mutating endpoints refuse GET.
func TestAdminOperations(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := runStrait(t, httpBootstrap(up.Addr, routeCfg{}, ""), 1, "--service-node", "ops-node", "--drain-time-s", "5")
	admin := "http://" + p.admin
	if code, body := get(t, "http://"+p.addrs["ingress"]+"/"); code != 200 {
		t.Fatalf("request: %d %s", code, body)
	}

	code, body := adminDo(t, "GET", admin+"/server_info")
	var si struct {
		Version            string `json:"version"`
		State              string `json:"state"`
		UptimeCurrentEpoch string `json:"uptime_current_epoch"`
		CommandLineOptions struct {
			DrainTime   string `json:"drain_time"`
			ServiceNode string `json:"service_node"`
		} `json:"command_line_options"`
		Node struct {
			ID string `json:"id"`
		} `json:"node"`
	}
	if err := json.Unmarshal([]byte(body), &si); code != 200 || err != nil {
		t.Fatalf("/server_info: %d %v\n%s", code, err, body)
	}
	if !strings.HasPrefix(si.Version, "strait/") || si.State != "LIVE" || si.Node.ID != "ops-node" ||
		si.CommandLineOptions.DrainTime != "5s" || si.UptimeCurrentEpoch == "" {
		t.Errorf("/server_info: %s", body)
	}

	if code, body := adminDo(t, "GET", admin+"/listeners"); code != 200 || body != "ingress::"+p.addrs["ingress"]+"\n" {
		t.Errorf("/listeners: %d %q", code, body)
	}
	code, body = adminDo(t, "GET", admin+"/listeners?format=json")
	var ls struct {
		ListenerStatuses []struct {
			Name         string
			LocalAddress struct {
				SocketAddress struct {
					Address   string
					PortValue int `json:"port_value"`
				} `json:"socket_address"`
			} `json:"local_address"`
		} `json:"listener_statuses"`
	}
	if err := json.Unmarshal([]byte(body), &ls); code != 200 || err != nil || len(ls.ListenerStatuses) != 1 || ls.ListenerStatuses[0].Name != "ingress" ||
		!strings.HasSuffix(p.addrs["ingress"], fmt.Sprintf(":%d", ls.ListenerStatuses[0].LocalAddress.SocketAddress.PortValue)) {
		t.Errorf("/listeners?format=json: %d %v %s", code, err, body)
	}
	code, body = adminDo(t, "GET", admin+"/memory")
	var mem struct{ Allocated, HeapSize string }
	if err := json.Unmarshal([]byte(body), &mem); code != 200 || err != nil || mem.Allocated == "" || mem.Allocated == "0" {
		t.Errorf("/memory: %d %s", code, body)
	}

	// /stats: a regular expression, usedonly, histogram buckets.
	code, body = adminDo(t, "GET", admin+"/stats?filter="+url.QueryEscape(`^cluster\.backend\.upstream_rq_(total|2xx)$`))
	if code != 200 || body != "cluster.backend.upstream_rq_2xx: 1\ncluster.backend.upstream_rq_total: 1\n" {
		t.Errorf("/stats?filter=: %d %q", code, body)
	}
	if code, body := adminDo(t, "GET", admin+"/stats?filter=("); code != 400 || !strings.Contains(body, "Invalid regex") {
		t.Errorf("bad regex: %d %q", code, body)
	}
	code, body = adminDo(t, "GET", admin+"/stats?usedonly")
	if code != 200 || strings.Contains(body, ": 0\n") || !strings.Contains(body, "upstream_rq_total: 1") {
		t.Errorf("/stats?usedonly: %d\n%s", code, body)
	}
	code, body = adminDo(t, "GET", admin+"/stats?filter=upstream_cx_connect_ms&histogram_buckets=cumulative")
	if code != 200 || !strings.HasPrefix(body, "cluster.backend.upstream_cx_connect_ms: B0.5(") || !strings.Contains(body, "B+Inf(1)") {
		t.Errorf("cumulative buckets: %d %q", code, body)
	}
	if code, _ := adminDo(t, "GET", admin+"/stats?histogram_buckets=detailed"); code != 400 {
		t.Errorf("histogram_buckets=detailed: %d", code)
	}
	if _, body := adminDo(t, "GET", admin+"/stats/prometheus"); !strings.Contains(body, `envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name="backend",le="+Inf"} 1`) {
		t.Errorf("no connect-time histogram in /stats/prometheus")
	}

	// /logging: the listener logger at trace logs each connection.
	if code, body := adminDo(t, "GET", admin+"/logging"); code != 200 || !strings.Contains(body, "  listener: info\n") {
		t.Errorf("/logging: %d %q", code, body)
	}
	if code, _ := adminDo(t, "GET", admin+"/logging?level=debug"); code != 405 {
		t.Errorf("GET /logging?level=: %d, want 405", code)
	}
	for _, bad := range []string{"?level=loud", "?paths=nosuch:debug", "?paths=listener", "?paths=listener:debug,xds:bad", ""} {
		if code, _ := adminDo(t, "POST", admin+"/logging"+bad); code != 400 {
			t.Errorf("POST /logging%s: %d, want 400", bad, code)
		}
	}
	if strings.Contains(p.stderr.String(), "connection accepted") {
		t.Fatal("trace lines before trace was asked for")
	}
	if code, body := adminDo(t, "POST", admin+"/logging?paths=listener:trace"); code != 200 || !strings.Contains(body, "  listener: trace\n") || !strings.Contains(body, "  xds: info\n") {
		t.Errorf("POST /logging?paths=: %d %q", code, body)
	}
	if c, err := net.Dial("tcp", p.addrs["ingress"]); err == nil {
		c.Close()
	}
	testutil.Eventually(t, 5*time.Second, "a trace line for the connection", func() bool {
		return strings.Contains(p.stderr.String(), "connection accepted")
	})
	if code, body := adminDo(t, "POST", admin+"/logging?level=warning"); code != 200 || strings.Contains(body, ": trace") || !strings.Contains(body, "  main: warning\n") {
		t.Errorf("POST /logging?level=: %d %q", code, body)
	}

	// Health check failure: /ready says DRAINING, traffic still flows.
	if code, _ := adminDo(t, "GET", admin+"/healthcheck/fail"); code != 405 {
		t.Errorf("GET /healthcheck/fail: %d, want 405", code)
	}
	adminDo(t, "POST", admin+"/healthcheck/fail")
	if code, body := adminDo(t, "GET", admin+"/ready"); code != 503 || body != "DRAINING\n" {
		t.Errorf("/ready after /healthcheck/fail: %d %q", code, body)
	}
	if code, _ := get(t, "http://"+p.addrs["ingress"]+"/"); code != 200 {
		t.Errorf("a request while the health check fails: %d", code)
	}
	_, body = adminDo(t, "GET", admin+"/server_info")
	if err := json.Unmarshal([]byte(body), &si); err != nil || si.State != "DRAINING" {
		t.Errorf("/server_info state after /healthcheck/fail: %s", body)
	}
	adminDo(t, "POST", admin+"/healthcheck/ok")
	if code, body := adminDo(t, "GET", admin+"/ready"); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready after /healthcheck/ok: %d %q", code, body)
	}

	if code, _ := adminDo(t, "GET", admin+"/quitquitquit"); code != 405 {
		t.Errorf("GET /quitquitquit: %d, want 405", code)
	}
	http.DefaultClient.CloseIdleConnections() // (the drain would wait for them)
	if code, body := adminDo(t, "POST", admin+"/quitquitquit"); code != 200 || body != "OK\n" {
		t.Errorf("POST /quitquitquit: %d %q", code, body)
	}
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after /quitquitquit\n%s", code, p.stderr.String())
	}
}
