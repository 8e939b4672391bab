package test

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/straitproxy/strait/internal/testutil"
)

// tool returns the path of an external peer. make test installs them; a
// missing one fails the test rather than skipping it, unless
// STRAIT_NO_PEERS=1 says that this machine cannot have them.
func tool(t *testing.T, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("STRAIT_NO_PEERS") == "1" {
			t.Skipf("%s not installed (STRAIT_NO_PEERS=1)", name)
		}
		t.Fatalf("%s not installed: run make test, which installs it", name)
	}
	return p
}

func TestCurl(t *testing.T) {
	curl := tool(t, "curl")
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	base := p.url("ingress")
	run := func(args ...string) string {
		out, err := exec.Command(curl, append([]string{"-sS", "--max-time", "10"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if got := run(base + "/hello"); got != "ok /hello" {
		t.Fatalf("GET: %q", got)
	}
	if got := run("--data-binary", "posted", base+"/echo"); got != "posted" {
		t.Fatalf("POST: %q", got)
	}
	if got := run("-H", "Transfer-Encoding: chunked", "--data-binary", "chunked body", base+"/echo"); got != "chunked body" {
		t.Fatalf("chunked POST: %q", got)
	}
	// Two URLs in one invocation share one kept-alive connection.
	out := run("-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} ", base+"/a", base+"/b")
	if strings.TrimSpace(out) != "1 0" {
		t.Fatalf("keep-alive: connects per request %q, want \"1 0\"", out)
	}
}

func TestApacheBench(t *testing.T) {
	ab := tool(t, "ab")
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	out, err := exec.Command(ab, "-q", "-k", "-n", "4000", "-c", "50", "-s", "10", p.url("ingress")+"/ab").CombinedOutput()
	if err != nil {
		t.Fatalf("ab: %v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "Complete requests:      4000") || !strings.Contains(s, "Failed requests:        0") {
		t.Fatalf("ab:\n%s", s)
	}
	if strings.Contains(s, "Non-2xx responses") {
		t.Fatalf("ab saw non-2xx:\n%s", s)
	}
	p.settle()
	if got := p.stat("http.ingress.downstream_rq_2xx"); got != 4000 {
		t.Fatalf("downstream_rq_2xx = %d, want 4000", got)
	}
}

func TestWrk(t *testing.T) {
	wrk := tool(t, "wrk")
	cases := []struct {
		name string
		args []string
		// slack is how many answered requests wrk may have cut off
		// uncounted when its time ran out.
		slack int64
	}{
		{"50 connections", []string{"-t", "1", "-c", "50"}, 50},
		{"1000 connections", []string{"-t", "2", "-c", "1000"}, 1000},
		{"pipelined 10 deep", []string{"-t", "1", "-c", "50", "-s", "testdata/pipeline.lua"}, 500},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := testutil.StartUpstream(t)
			p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
			args := append(tc.args, "-d", "2s", "--timeout", "5s", p.url("ingress")+"/wrk")
			out, err := exec.Command(wrk, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("wrk: %v\n%s", err, out)
			}
			s := string(out)
			if strings.Contains(s, "Non-2xx") || strings.Contains(s, "Socket errors") {
				t.Fatalf("wrk saw errors:\n%s", s)
			}
			m := regexp.MustCompile(`(\d+) requests in`).FindStringSubmatch(s)
			if m == nil {
				t.Fatalf("wrk output:\n%s", s)
			}
			n, _ := strconv.ParseInt(m[1], 10, 64)
			p.settle()
			got := p.stat("http.ingress.downstream_rq_2xx")
			if n == 0 || got < n || got > n+tc.slack {
				t.Fatalf("wrk completed %d, proxy answered %d", n, got)
			}
			t.Logf("%d requests in 2s (a test, not a benchmark)", n)
		})
	}
}
