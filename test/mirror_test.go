package test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// Traffic mirroring (route request_mirror_policies, issue 13).

// mirrorSeen is what a mirror server saw of one request.
type mirrorSeen struct {
	host, method, path string
	n                  int
	sum                [32]byte
	trailer            string
}

// mirrorServer records every request it gets; it answers 500 so that a
// test sees the shadow's answer change nothing.
type mirrorServer struct {
	addr string
	mu   sync.Mutex
	seen []mirrorSeen
}

func startMirrorServer(t *testing.T, h2c bool) *mirrorServer {
	m := &mirrorServer{}
	m.addr = serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		m.mu.Lock()
		m.seen = append(m.seen, mirrorSeen{host: r.Host, method: r.Method, path: r.URL.Path, n: len(b), sum: sha256.Sum256(b), trailer: r.Trailer.Get("x-req")})
		m.mu.Unlock()
		w.WriteHeader(500)
		io.WriteString(w, "the mirror's answer is dropped")
	}, h2c)
	return m
}

// blackHole accepts connections and never reads nor answers; they close
// when the test ends.
func blackHole(t *testing.T) string {
	var mu sync.Mutex
	var held []net.Conn
	addr := testutil.StartTCP(t, func(c net.Conn) {
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return addr
}

func (m *mirrorServer) got() []mirrorSeen {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.seen)
}

func mirrorRoutes(policies string) string {
	return `              - match: { prefix: "/" }
                route:
                  cluster: backend
                  request_mirror_policies: ` + policies + "\n"
}

// TestMirrorHealthy: the mirror sees every request, HTTP/1.1 and h2c,
// with the -shadow host and the whole body (streamed, chunked, with
// trailers), while the client gets the primary's answer; the shadow's
// 500 changes nothing.
func TestMirrorHealthy(t *testing.T) {
	up := testutil.StartUpstream(t)
	mir := startMirrorServer(t, false)
	mir2 := startMirrorServer(t, true)
	routes := `              - match: { prefix: "/status/" }
                route:
                  cluster: backend
                  retry_policy: { retry_on: 5xx, num_retries: 1 }
                  request_mirror_policies: [{cluster: mirror}, {cluster_header: x-mirror-to, disable_shadow_host_suffix_append: true}]
` + mirrorRoutes(`[{cluster: mirror}, {cluster_header: x-mirror-to, disable_shadow_host_suffix_append: true}]`)
	boot := filterBootstrap(up.Addr, "", routes) +
		staticCluster("mirror", mir.addr) + staticCluster("mirror2", mir2.addr) +
		`    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
`
	p := startProxy(t, boot)
	big := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640,000 bytes
	type sent struct {
		host, path string
		body       []byte
	}
	var want []sent
	var want2 []sent
	clients := map[string]*http.Client{"h1": http.DefaultClient, "h2c": h2cClient()}
	for _, proto := range []string{"h1", "h2c"} {
		c := clients[proto]
		for i, body := range [][]byte{nil, []byte("small body"), big} {
			path := fmt.Sprintf("/echo/%s/%d", proto, i)
			var rd io.Reader
			if body != nil {
				// No length: chunked on HTTP/1.1, DATA frames on h2c.
				rd = io.MultiReader(bytes.NewReader(body))
			}
			req, _ := http.NewRequest("POST", p.url("in")+path, rd)
			req.Host = "shop.example:8080"
			if i == 1 {
				req.Header.Set("x-mirror-to", "mirror2")
				want2 = append(want2, sent{"shop.example:8080", path, body})
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasPrefix(string(got), "ok /echo/") {
				t.Fatalf("%s %s: %d %q", proto, path, resp.StatusCode, got)
			}
			want = append(want, sent{"shop.example-shadow:8080", path, body})
		}
	}
	// A big body streamed to the HTTP/2 mirror arrives whole.
	req, _ := http.NewRequest("POST", p.url("in")+"/echo/big-h2", io.MultiReader(bytes.NewReader(big)))
	req.Host = "shop.example"
	req.Header.Set("x-mirror-to", "mirror2")
	resp, err := clients["h1"].Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	want = append(want, sent{"shop.example-shadow", "/echo/big-h2", big})
	want2 = append(want2, sent{"shop.example", "/echo/big-h2", big})
	// A retried request is mirrored once.
	req, _ = http.NewRequest("POST", p.url("in")+"/status/503", strings.NewReader("retried body"))
	req.Host = "shop.example"
	if resp, err = clients["h1"].Do(req); err != nil || resp.StatusCode != 503 {
		t.Fatalf("retried: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	want = append(want, sent{"shop.example-shadow", "/status/503", []byte("retried body")})
	// A request with trailers goes whole to the mirror too.
	req, _ = http.NewRequest("POST", p.url("in")+"/trailers", io.MultiReader(strings.NewReader("with trailers")))
	req.Host = "shop.example"
	req.Trailer = http.Header{"X-Req": {"t-value"}}
	resp, err = clients["h2c"].Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	want = append(want, sent{"shop.example-shadow", "/trailers", []byte("with trailers")})

	check := func(m *mirrorServer, want []sent) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, "the mirror to see every request", func() bool { return len(m.got()) >= len(want) })
		seen := m.got()
		if len(seen) != len(want) {
			t.Fatalf("mirror saw %d requests, want %d", len(seen), len(want))
		}
		for _, w := range want {
			i := slices.IndexFunc(seen, func(s mirrorSeen) bool { return s.path == w.path })
			if i < 0 {
				t.Fatalf("mirror never saw %s", w.path)
			}
			s := seen[i]
			if s.host != w.host || s.method != "POST" || s.n != len(w.body) || s.sum != sha256.Sum256(w.body) {
				t.Errorf("%s: mirror saw host %q method %s %d bytes; want host %q, %d bytes", w.path, s.host, s.method, s.n, w.host, len(w.body))
			}
			if w.path == "/trailers" && s.trailer != "t-value" {
				t.Errorf("mirror saw trailer x-req %q", s.trailer)
			}
		}
	}
	check(mir, want)
	check(mir2, want2)
	testutil.Eventually(t, 5*time.Second, "mirror stats", func() bool {
		return p.stat("http.in.rq_mirror_total") == int64(len(want)+len(want2)) && p.stat("cluster.mirror.upstream_rq_5xx") == int64(len(want)) &&
			p.stat("cluster.backend.upstream_rq_retry") == 1
	})
	if n := p.stat("http.in.rq_mirror_abandoned") + p.stat("http.in.rq_mirror_failed"); n != 0 {
		t.Errorf("%d mirror copies abandoned or failed", n)
	}
}

// TestMirrorFractionAndMissing: runtime_fraction samples its share; a
// mirror cluster that does not exist, or a cluster_header absent, costs
// the primary nothing.
func TestMirrorFractionAndMissing(t *testing.T) {
	up := testutil.StartUpstream(t)
	mir := startMirrorServer(t, false)
	boot := filterBootstrap(up.Addr, "", mirrorRoutes(`[{cluster: mirror, runtime_fraction: {default_value: {numerator: 30}}}, {cluster_header: x-to}]`)) +
		staticCluster("mirror", mir.addr)
	p := startProxy(t, boot)
	const n = 400
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("GET", p.url("in")+"/f", nil)
		if i%2 == 0 {
			req.Header.Set("x-to", "no-such-cluster")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	testutil.Eventually(t, 5*time.Second, "mirror stats", func() bool {
		return p.stat("http.in.rq_mirror_failed") == n/2 && int64(len(mir.got())) == p.stat("http.in.rq_mirror_total")
	})
	// 30 % of 400: 120 ± 4.5 sd (41).
	if got := len(mir.got()); got < 120-41 || got > 120+41 {
		t.Fatalf("mirror saw %d of %d requests at 30 %%", got, n)
	}
}

// TestMirrorLagAbandoned: a copy that falls behind the primary by more
// than the buffer limit is abandoned and counted; the primary completes.
func TestMirrorLagAbandoned(t *testing.T) {
	up := testutil.StartUpstream(t)
	hole := blackHole(t)
	boot := filterBootstrap(up.Addr, "", mirrorRoutes(`[{cluster: hole}]`)) +
		staticCluster("hole", hole) + `    circuit_breakers: { thresholds: [ { max_connections: 1 } ] }
`
	boot = strings.Replace(boot, "    filter_chains:", "    per_connection_buffer_limit_bytes: 65536\n    filter_chains:", 1)
	p := startProxy(t, boot)
	// The first copy takes the mirror's only connection and hangs there.
	if resp, body := doReq(t, "GET", p.url("in")+"/first", ""); resp.StatusCode != 200 {
		t.Fatalf("first: %d %q", resp.StatusCode, body)
	}
	// The second copy, of a small body, waits for a connection without
	// falling behind: it is kept (it will time out later).
	if resp, body := doReq(t, "POST", p.url("in")+"/echo", "small"); resp.StatusCode != 200 || body != "small" {
		t.Fatalf("small: %d %q", resp.StatusCode, body)
	}
	// The third copy waits too while the primary streams 1 MiB: it falls
	// behind and is dropped.
	big := strings.Repeat("x", 1<<20)
	resp, body := doReq(t, "POST", p.url("in")+"/echo", big)
	if resp.StatusCode != 200 || len(body) != len(big) {
		t.Fatalf("primary: %d, %d bytes", resp.StatusCode, len(body))
	}
	testutil.Eventually(t, 5*time.Second, "the lagging copy to be abandoned", func() bool {
		return p.stat("http.in.rq_mirror_abandoned") == 1
	})
	time.Sleep(100 * time.Millisecond)
	if n := p.stat("http.in.rq_mirror_abandoned"); n != 1 {
		t.Fatalf("%d copies abandoned, want only the lagging one", n)
	}
}

// TestMirrorNeverHurtsThePrimary: with the mirror black-holed (accepts,
// never answers) or slow (answers after 5 s), 10,000 primary requests
// (POSTs of 1 KiB)
// each keep their p99 within 10 % of the requests without a mirror, in
// the same run (the three kinds interleaved in blocks, so the machine's
// noise falls on all of them alike), and the proxy's memory and
// goroutines stay bounded (by the mirror clusters' circuit breakers).
func TestMirrorNeverHurtsThePrimary(t *testing.T) {
	if testing.Short() {
		t.Skip("30,000 requests")
	}
	up := testutil.StartUpstream(t)
	hole := blackHole(t)
	slow := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}, false)
	routes := `              - match: { prefix: "/plain" }
                route: { cluster: backend }
              - match: { prefix: "/hole" }
                route: { cluster: backend, request_mirror_policies: [{cluster: hole}] }
              - match: { prefix: "/slow" }
                route: { cluster: backend, request_mirror_policies: [{cluster: slow}] }
`
	const maxCopies = 256
	breaker := fmt.Sprintf("    circuit_breakers: { thresholds: [ { max_requests: %d, max_connections: %d } ] }\n", maxCopies, maxCopies)
	p := startProxy(t, filterBootstrap(up.Addr, "", routes)+staticCluster("hole", hole)+breaker+staticCluster("slow", slow)+breaker)

	const conc, block, per = 8, 500, 10000
	tr := &http.Transport{MaxIdleConnsPerHost: conc}
	c := &http.Client{Transport: tr}
	body := strings.Repeat("b", 1024)
	get := func(path string) time.Duration {
		t0 := time.Now()
		// A body: the copies stream it, so the body path is measured too.
		resp, err := c.Post(p.url("in")+path, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
		return time.Since(t0)
	}
	runBlock := func(path string, n int, into *[]time.Duration) {
		var wg sync.WaitGroup
		var next atomic.Int64
		lat := make([]time.Duration, n)
		for w := 0; w < conc; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
					lat[i] = get(path)
				}
			}()
		}
		wg.Wait()
		if into != nil {
			*into = append(*into, lat...)
		}
	}
	for _, path := range []string{"/plain", "/hole", "/slow"} {
		runBlock(path, 200, nil) // warm the pools
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	gBefore := runtime.NumGoroutine()
	p99 := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)*99/100]
	}
	// A p99 is noisy on a shared machine (make test runs packages side by
	// side): a measurement over the bound is taken again, up to three
	// times, and only a mirror that hurts every time fails.
	deadline := time.Now().Add(90 * time.Second)
	for try := 1; ; try++ {
		var plain, holed, slowed []time.Duration
		for len(plain) < per && time.Now().Before(deadline) {
			runBlock("/plain", block, &plain)
			runBlock("/hole", block, &holed)
			runBlock("/slow", block, &slowed)
		}
		if len(plain) < per {
			t.Fatalf("only %d requests per kind in the time left", len(plain))
		}
		base, ph, ps := p99(plain), p99(holed), p99(slowed)
		t.Logf("p99: no mirror %v, black-holed mirror %v (%.2fx), slow mirror %v (%.2fx)", base, ph, float64(ph)/float64(base), ps, float64(ps)/float64(base))
		if float64(ph) <= 1.10*float64(base) && float64(ps) <= 1.10*float64(base) {
			break
		}
		if try == 3 {
			t.Errorf("a mirror moved the primary's p99 more than 10 %% in three measurements")
			break
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	gAfter := runtime.NumGoroutine()
	t.Logf("heap in use grew %d KiB, goroutines %d -> %d; copies started %d, failed %d", grown>>10, gBefore, gAfter,
		p.stat("http.in.rq_mirror_total"), p.stat("http.in.rq_mirror_failed"))
	// Each mirror cluster holds at most max_requests copies in flight: a
	// goroutine, a connection and a request's headers each (and the test's
	// own servers a goroutine per connection).
	if grown > 24<<20 || gAfter-gBefore > 2*3*maxCopies+64 {
		t.Errorf("memory or goroutines unbounded")
	}
	if a := p.stat("cluster.hole.upstream_rq_active"); a > maxCopies || p.stat("http.in.rq_mirror_total") < 2*maxCopies {
		t.Errorf("%d black-holed copies in flight; %d started", a, p.stat("http.in.rq_mirror_total"))
	}
	if p.stat("cluster.hole.upstream_rq_overflow") == 0 {
		t.Errorf("the black hole's copies never met the circuit breaker")
	}
}
