package test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

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

// TestAdminPageInChromium loads the admin page in headless Chromium
// (Debian's chromium, which scripts/install-test-deps.sh installs) while
// requests flow, and checks the graphs it drew: points in each, requests
// per second and connections above zero, listeners and hosts listed.
// STRAIT_ADMIN_SCREENSHOT=docs/admin.png also saves a screenshot there.
func TestAdminPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if chromium, err = exec.LookPath("chromium-browser"); err != nil {
			t.Skip("no chromium (scripts/install-test-deps.sh installs it)")
		}
	}
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // steady traffic while the page samples, bounded
		defer close(done)
		c := &http.Client{Timeout: 2 * time.Second}
		defer c.CloseIdleConnections()
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if resp, err := c.Get(p.url("ingress") + "/"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	defer func() { close(stop); <-done }()
	time.Sleep(time.Second)
	run := func(extra ...string) string {
		args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + t.TempDir(), "--window-size=1280,1100", "--virtual-time-budget=6000"}, extra...)
		cmd := exec.Command(chromium, append(args, p.admin()+"/")...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		ctxDone := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
		defer ctxDone.Stop()
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, errb.String())
		}
		return out.String()
	}
	dom := run("--dump-dom")
	canvas := regexp.MustCompile(`<canvas id="(\w+)"[^>]*data-points="(\d+)" data-nonzero="(\d+)"`)
	drawn := map[string][2]int{}
	for _, m := range canvas.FindAllStringSubmatch(dom, -1) {
		pts, _ := strconv.Atoi(m[2])
		nz, _ := strconv.Atoi(m[3])
		drawn[m[1]] = [2]int{pts, nz}
	}
	for _, id := range []string{"rps", "lat", "cx", "err"} {
		if drawn[id][0] < 2 {
			t.Errorf("graph %s: %d points drawn", id, drawn[id][0])
		}
	}
	if drawn["rps"][1] == 0 || drawn["cx"][1] == 0 || drawn["lat"][1] == 0 {
		t.Errorf("graphs empty under traffic: %v", drawn)
	}
	if !strings.Contains(dom, ">ingress<") || !regexp.MustCompile(`>backend<.*>127\.0\.0\.1:\d+<`).MatchString(dom) {
		t.Errorf("the listeners or hosts are missing from the page:\n%s", dom)
	}
	if path := os.Getenv("STRAIT_ADMIN_SCREENSHOT"); path != "" {
		abs, _ := filepath.Abs(filepath.Join("..", path))
		run("--screenshot=" + abs)
		if fi, err := os.Stat(abs); err != nil || fi.Size() == 0 {
			t.Errorf("screenshot %s: %v", abs, err)
		}
	}
}
