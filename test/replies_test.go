package test

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/straitproxy/strait/internal/testutil"
)

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	// Below Linux's ephemeral range (32768-60999): a port a test frees
	// there may be handed at once to the next bind to port 0 (the proxy's
	// own admin listener once answered for a "dead" cluster), or become
	// a connection's own source port (a self-connect).
	for i := 0; i < 100; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

func TestLocalReplies(t *testing.T) {
	up := testutil.StartUpstream(t)
	routes := `              - match: { path: "/direct" }
                direct_response: { status: 418, body: { inline_string: "teapot" } }
              - match: { path: "/old" }
                redirect: { path_redirect: "/new", response_code: FOUND }
              - match: { prefix: "/slow" }
                route: { cluster: backend, timeout: 0.2s }
              - match: { prefix: "/api" }
                route: { cluster: backend, prefix_rewrite: "/v2" }
              - match: { prefix: "/hdr" }
                route: { cluster: backend, prefix_rewrite: "/headers" }
                request_headers_to_add: [ { header: { key: x-added, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" } } ]
                response_headers_to_add: [ { header: { key: x-resp, value: "1" } } ]
              - match: { prefix: "/" }
                route: { cluster: backend }`
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{routes: routes}, ""))
	base := p.url("ingress")

	cases := []struct {
		name, path, wantBody string
		wantCode             int
	}{
		{"direct response", "/direct", "teapot", 418},
		{"timeout", "/slow/2000", "upstream request timeout\n", 504},
		{"prefix rewrite", "/api/users?id=3", "ok /v2/users?id=3", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, base+tc.path)
			if code != tc.wantCode || body != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
	t.Run("redirect", func(t *testing.T) {
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(base + "/old")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 302 || !strings.HasSuffix(resp.Header.Get("Location"), "/new") {
			t.Fatalf("got %d location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("header mutation", func(t *testing.T) {
		resp, err := http.Get(base + "/hdr")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "X-Added: 127.0.0.1") || resp.Header.Get("x-resp") != "1" {
			t.Fatalf("headers not applied: %s / %v", b, resp.Header)
		}
	})
	p.settle()
	if got := p.stat("cluster.backend.upstream_rq_timeout"); got != 1 {
		t.Fatalf("upstream_rq_timeout = %d", got)
	}
}

func TestNoRouteAndNoUpstream(t *testing.T) {
	dead := closedPort(t)
	routes := `              - match: { prefix: "/known" }
                route: { cluster: backend }`
	p := startProxy(t, httpBootstrap(dead, routeCfg{routes: routes}, ""))
	code, body := get(t, p.url("ingress")+"/unknown")
	if code != 404 || body != "route not found\n" {
		t.Fatalf("no route: %d %q", code, body)
	}
	code, body = get(t, p.url("ingress")+"/known")
	if code != 503 || !strings.Contains(body, "connection failure") {
		t.Fatalf("connect failure: %d %q", code, body)
	}
	if p.stat("cluster.backend.upstream_cx_connect_fail") != 1 || p.stat("http.ingress.no_route") != 1 {
		t.Fatal("connect_fail or no_route not counted")
	}
}

// badUpstream answers every request with the given raw bytes, then closes.
func badUpstream(t *testing.T, raw string) string {
	return testutil.StartTCP(t, func(c net.Conn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, raw)
	})
}

func TestMalformedUpstream(t *testing.T) {
	cases := []struct {
		name, raw string
		code      int
	}{
		{"garbage", "SPDY/9 what\r\n\r\n", 502},
		{"cl and te", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502},
		{"closed before headers", "", 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, httpBootstrap(badUpstream(t, tc.raw), routeCfg{}, ""))
			code, _ := get(t, p.url("ingress")+"/")
			if code != tc.code {
				t.Fatalf("got %d, want %d", code, tc.code)
			}
		})
	}
}

// flakyUpstream fails the first `fail` requests with 503, then answers 200.
func TestRetries(t *testing.T) {
	var n atomic.Int64
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, "finally")
	}, false)
	routes := `              - match: { prefix: "/" }
                route:
                  cluster: backend
                  retry_policy: { retry_on: "5xx", num_retries: 3, retry_back_off: { base_interval: 0.001s } }`
	p := startProxy(t, httpBootstrap(addr, routeCfg{routes: routes}, ""))
	resp, err := http.Post(p.url("ingress")+"/", "text/plain", strings.NewReader("replay me"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "finally" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	p.settle()
	if got := p.stat("cluster.backend.upstream_rq_retry"); got != 2 {
		t.Fatalf("upstream_rq_retry = %d, want 2", got)
	}
	if got := p.stat("cluster.backend.upstream_rq_retry_success"); got != 1 {
		t.Fatalf("upstream_rq_retry_success = %d, want 1", got)
	}
}

// TestDeadPooledConnection: the upstream closes its idle keep-alive
// connections; the next request must not fail on the dead one.
func TestDeadPooledConnection(t *testing.T) {
	conns := make(chan net.Conn, 16)
	addr := testutil.StartTCP(t, func(c net.Conn) {
		conns <- c
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p := startProxy(t, httpBootstrap(addr, routeCfg{}, ""))
	for i := 0; i < 3; i++ {
		code, body := get(t, p.url("ingress")+"/")
		if code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		// The upstream closes every connection it has while idle.
		for len(conns) > 0 {
			(<-conns).Close()
		}
	}
	if got := p.stat("cluster.backend.upstream_cx_total"); got != 3 {
		t.Fatalf("upstream_cx_total = %d, want 3 (one per request)", got)
	}
}

// TestRequestBodyTimeouts: a client that stops sending its body gets 408
// and a closed connection, by stream_idle_timeout or request_timeout.
func TestRequestBodyTimeouts(t *testing.T) {
	cases := []struct{ name, opts, reason, stat string }{
		{"stream idle", "          stream_idle_timeout: 0.2s", "stream timeout", "http.ingress.downstream_rq_idle_timeout"},
		{"request", "          request_timeout: 0.3s", "request timeout", "http.ingress.downstream_rq_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := testutil.StartUpstream(t)
			p := startProxy(t, httpBootstrap(up.Addr, routeCfg{hcmOpts: tc.opts}, ""))
			out, closed := rawExchange(t, p.addr("ingress"), "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
			if !strings.HasPrefix(out, "HTTP/1.1 408") || !strings.Contains(out, tc.reason) || !closed {
				t.Fatalf("got %q closed=%v", out, closed)
			}
			if p.stat(tc.stat) != 1 {
				t.Fatalf("%s not counted", tc.stat)
			}
		})
	}
}
