// Fields Istio's pilot sends that Strait used to refuse (issue 16), each
// with Envoy's semantics.

package test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/straitproxy/strait/internal/testutil"
)

// TestAttemptCount: a virtual host with include_request_attempt_count
// numbers each upstream attempt in x-envoy-attempt-count (1, then 2 on
// the retry), and include_attempt_count_in_response tells the client how
// many were made; without them no such header goes either way.
func TestAttemptCount(t *testing.T) {
	var calls atomic.Int32
	seen := make(chan string, 8)
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("x-envoy-attempt-count")
		if calls.Add(1)%2 == 1 {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "ok")
	}, false)
	routes := `              - match: { prefix: "/" }
                route: { cluster: backend, retry_policy: { retry_on: 5xx, num_retries: 2, retry_back_off: { base_interval: 0.001s } } }`
	y := httpBootstrap(addr, routeCfg{routes: routes}, "")
	counted := strings.Replace(y, `              domains: ["*"]`, `              domains: ["*"]
              include_request_attempt_count: true
              include_attempt_count_in_response: true`, 1)
	p := startProxy(t, counted)
	resp, err := http.Get(p.url("ingress") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-envoy-attempt-count") != "2" {
		t.Fatalf("response %d, x-envoy-attempt-count %q; want 200 after 2 attempts", resp.StatusCode, resp.Header.Get("x-envoy-attempt-count"))
	}
	if a, b := <-seen, <-seen; a != "1" || b != "2" {
		t.Fatalf("the upstream saw attempt counts %q, %q; want 1, 2", a, b)
	}
	p = startProxy(t, y)
	resp, err = http.Get(p.url("ingress") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if a, b := <-seen, <-seen; resp.StatusCode != 200 || a != "" || b != "" || resp.Header.Get("x-envoy-attempt-count") != "" {
		t.Fatalf("without the options: %d, upstream saw %q %q, response header %q", resp.StatusCode, a, b, resp.Header.Get("x-envoy-attempt-count"))
	}
}

// TestAltStatName: a cluster's alt_stat_name names it in stats and in
// %UPSTREAM_CLUSTER%, as Envoy's observability name; routing still uses
// its name.
func TestAltStatName(t *testing.T) {
	up := testutil.StartUpstream(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	hcm := `          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ` + logFile + `
              log_format: { text_format_source: { inline_string: "%UPSTREAM_CLUSTER%\n" } }`
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{hcmOpts: hcm}, "    alt_stat_name: backend_observed"))
	if code, _ := get(t, p.url("ingress")+"/"); code != 200 {
		t.Fatalf("request: %d", code)
	}
	p.srv.FlushLogs()
	if got := p.stat("cluster.backend_observed.upstream_rq_total"); got != 1 {
		t.Errorf("cluster.backend_observed.upstream_rq_total = %d", got)
	}
	if _, ok := p.srv.Stats().Lookup("cluster.backend.upstream_rq_total"); ok {
		t.Error("stats still under the cluster's name")
	}
	if b, err := os.ReadFile(logFile); err != nil || string(b) != "backend_observed\n" {
		t.Errorf("%%UPSTREAM_CLUSTER%%: %q %v", b, err)
	}
}
