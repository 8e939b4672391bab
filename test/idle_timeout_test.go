package test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// silent is an upstream that waits d before answering (headers and body),
// or, on /stall, sends its headers and then waits d before the body.
func silent(t *testing.T, d time.Duration) string {
	return serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "late")
	}, false)
}

// TestRouteIdleTimeout: a route's idle_timeout ends a silent upstream
// with 504 "stream timeout" and counts downstream_rq_idle_timeout, before
// the (longer) route timeout; idle_timeout: 0s disables the connection
// manager's stream_idle_timeout for that route; silence in the middle of
// a response body resets the stream.
func TestRouteIdleTimeout(t *testing.T) {
	up := silent(t, 1500*time.Millisecond)
	p, trace := startProxyTraced(t, httpBootstrap(up, routeCfg{
		hcmOpts: "          stream_idle_timeout: 0.3s",
		routes: `              - match: { prefix: "/patient" }
                route: { cluster: backend, timeout: 10s, idle_timeout: 0s }
              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 10s, idle_timeout: 0.2s }`}, ""))
	start := time.Now()
	code, got := get(t, p.url("ingress")+"/quiet")
	if code != 504 || strings.TrimSpace(got) != "stream timeout" {
		t.Fatalf("silent upstream: %d %q, want 504 stream timeout", code, got)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("answered after %v: the idle timeout did not fire", d)
	}
	p.settle()
	if n := p.stat("http.ingress.downstream_rq_idle_timeout"); n != 1 {
		t.Fatalf("downstream_rq_idle_timeout = %d", n)
	}
	if n := p.stat("http.ingress.downstream_rq_timeout"); n != 0 {
		t.Fatalf("downstream_rq_timeout = %d: counted as the route timeout", n)
	}
	waitTrace(t, trace, `method=GET path=/quiet protocol=HTTP/1.1 status=504 flags=SI`)
	// idle_timeout 0s: the 0.3 s stream_idle_timeout does not apply.
	if code, got := get(t, p.url("ingress")+"/patient"); code != 200 || got != "late" {
		t.Fatalf("route with idle_timeout 0s: %d %q", code, got)
	}
	p.settle()
	if n := p.stat("http.ingress.downstream_rq_idle_timeout"); n != 1 {
		t.Fatalf("downstream_rq_idle_timeout = %d after the patient route", n)
	}
	// Silence after the headers: the stream is reset (the HTTP/1.1 codec
	// may still hold the head, which it joins to the first body bytes:
	// then the client sees the connection close with no answer).
	start = time.Now()
	once := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // no silent retry
	if resp, err := once.Get(p.url("ingress") + "/stall"); err == nil {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil || strings.Contains(string(b), "late") {
			t.Fatalf("stalled body: %d %q %v, want a cut response", resp.StatusCode, b, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("stalled body cut after %v", d)
	}
	p.settle()
	if n := p.stat("http.ingress.downstream_rq_idle_timeout"); n != 2 {
		t.Fatalf("downstream_rq_idle_timeout = %d after the stalled body", n)
	}
}

// TestPerTryIdleTimeout: per_try_idle_timeout ends each silent try with
// a per-try timeout: retried as retry_on says, then 504 "upstream request
// timeout", counted in upstream_rq_per_try_idle_timeout.
func TestPerTryIdleTimeout(t *testing.T) {
	up := silent(t, 2*time.Second)
	p, trace := startProxyTraced(t, httpBootstrap(up, routeCfg{routes: `              - match: { prefix: "/" }
                route:
                  cluster: backend
                  timeout: 10s
                  retry_policy: { retry_on: 5xx, num_retries: 1, per_try_idle_timeout: 0.2s, retry_back_off: { base_interval: 0.01s } }`}, ""))
	start := time.Now()
	code, got := get(t, p.url("ingress")+"/")
	if code != 504 || strings.TrimSpace(got) != "upstream request timeout" {
		t.Fatalf("%d %q, want 504 upstream request timeout", code, got)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("answered after %v", d)
	}
	p.settle()
	waitTrace(t, trace, `status=504 flags=UT`)
	for name, want := range map[string]int64{
		"cluster.backend.upstream_rq_per_try_idle_timeout": 2, "cluster.backend.upstream_rq_retry": 1,
		"cluster.backend.upstream_rq_timeout": 1, "http.ingress.downstream_rq_idle_timeout": 0,
	} {
		if n := p.stat(name); n != want {
			t.Errorf("%s = %d, want %d", name, n, want)
		}
	}
}
