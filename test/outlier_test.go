package test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOutlierDetection: a cluster of a good host and a bad one (answers
// 503, or refuses connections) with outlier_detection: after three
// consecutive failures the bad host gets no request, /clusters flags it
// and the stats count the ejection; after base_ejection_time it gets
// requests again.
func TestOutlierDetection(t *testing.T) {
	good := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("good")) }, false)
	for _, tc := range []struct{ name, bad string }{
		{"5xx", serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, false)},
		{"connect", closedPort(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bh, bp, _ := net.SplitHostPort(tc.bad)
			yaml := httpBootstrap(good, routeCfg{}, `    outlier_detection: { consecutive_5xx: 3, interval: 0.1s, base_ejection_time: 0.6s, max_ejection_percent: 50 }`)
			yaml = strings.Replace(yaml, "      - lb_endpoints:\n", "      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: "+bh+", port_value: "+bp+" } } }\n", 1)
			p := startProxy(t, yaml)
			url := "http://" + p.addr("ingress") + "/"
			bad := func(n int) int {
				failed := 0
				for range n {
					if code, body := get(t, url); code != 200 || body != "good" {
						failed++
					}
				}
				return failed
			}
			if f := bad(30); f != 3 {
				t.Fatalf("%d of 30 requests failed, want the 3 that eject the bad host", f)
			}
			if n := p.stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx"); n != 1 {
				t.Errorf("ejections_enforced_consecutive_5xx %d", n)
			}
			if n := p.stat("cluster.backend.outlier_detection.ejections_active"); n != 1 {
				t.Errorf("ejections_active %d", n)
			}
			if _, body := get(t, p.admin()+"/clusters"); !strings.Contains(body, "backend::"+tc.bad+"::health_flags::/failed_outlier_check") {
				t.Errorf("/clusters does not flag the ejected host:\n%s", body)
			}
			time.Sleep(800 * time.Millisecond) // base_ejection_time and an interval
			if p.stat("cluster.backend.outlier_detection.ejections_active") != 0 {
				t.Fatal("the bad host did not come back after base_ejection_time")
			}
			if f := bad(10); f == 0 {
				t.Error("the host that came back got no request")
			}
		})
	}
}
