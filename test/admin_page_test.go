package test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/straitproxy/strait/internal/testutil"
)

// TestAdminPage: "/" is one self-contained HTML page (no external
// script, style or font), and every endpoint its script reads answers
// with the fields it reads: /stats?format=json with histogram buckets
// and their bounds, /server_info, /listeners?format=json, /clusters.
func TestAdminPage(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	for i := 0; i < 3; i++ {
		get(t, p.url("ingress")+"/")
	}
	p.settle()
	resp, err := http.Get(p.admin() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	code, page := get(t, p.admin()+"/")
	if code != 200 || !strings.HasPrefix(resp.Header.Get("content-type"), "text/html") || !strings.Contains(page, "<canvas") {
		t.Fatalf("/: %d %s", code, resp.Header.Get("content-type"))
	}
	if ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:`).FindString(page); ext != "" {
		t.Errorf("the page loads something from elsewhere: %q", ext)
	}
	for _, path := range regexp.MustCompile(`get\("(/[a-z_/?=]+)"`).FindAllStringSubmatch(page, -1) {
		if code, _ := get(t, p.admin()+path[1]); code != 200 {
			t.Errorf("the page reads %s: %d", path[1], code)
		}
	}

	_, body := get(t, p.admin()+"/stats?format=json")
	var st struct {
		Stats []struct {
			Name  string
			Value json.RawMessage
		}
		Bounds []float64 `json:"histogram_bounds_ms"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Bounds) == 0 {
		t.Fatalf("/stats?format=json: %v", err)
	}
	found := map[string]bool{}
	for _, s := range st.Stats {
		switch {
		case s.Name == "http.ingress.downstream_rq_time":
			var h struct{ Buckets []uint64 }
			json.Unmarshal(s.Value, &h)
			if len(h.Buckets) != len(st.Bounds)+1 || h.Buckets[len(h.Buckets)-1] != 3 {
				t.Errorf("downstream_rq_time buckets %v for %d bounds", h.Buckets, len(st.Bounds))
			}
			found["rq_time"] = true
		case s.Name == "http.ingress.downstream_rq_total" && string(s.Value) == "3":
			found["rq_total"] = true
		case strings.HasPrefix(s.Name, "listener.") && strings.HasSuffix(s.Name, ".downstream_cx_active"):
			found["cx_active"] = true
		case s.Name == "http.ingress.downstream_rq_5xx":
			found["5xx"] = true
		}
	}
	if len(found) != 4 {
		t.Errorf("the graphs' stats: found %v", found)
	}
	_, body = get(t, p.admin()+"/server_info")
	var si map[string]any
	if json.Unmarshal([]byte(body), &si); si["state"] != "LIVE" || si["version"] == nil || si["uptime_current_epoch"] == nil {
		t.Errorf("/server_info: %s", body)
	}
	_, body = get(t, p.admin()+"/clusters")
	if !regexp.MustCompile(`(?m)^backend::127\.0\.0\.1:\d+::health_flags::healthy$`).MatchString(body) ||
		!regexp.MustCompile(`(?m)^backend::127\.0\.0\.1:\d+::rq_total::3$`).MatchString(body) {
		t.Errorf("/clusters: %s", body)
	}
	if code, body := get(t, p.admin()+"/help"); code != 200 || !strings.Contains(body, "/server_info") {
		t.Errorf("/help: %d %q", code, body)
	}
}
