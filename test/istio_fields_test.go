// Fields Istio's pilot sends that Strait used to refuse (issue 16), each
// with Envoy's semantics.

package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// TestAttemptCount: a virtual host with include_request_attempt_count
// numbers each upstream attempt in x-envoy-attempt-count (1, then 2 on
// the retry), and include_attempt_count_in_response tells the client how
// many were made, on the proxy's own reply after attempts too; without
// them no such header goes either way.
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
                route: { cluster: backend, retry_policy: { retry_on: "5xx,connect-failure", num_retries: 2, retry_back_off: { base_interval: 0.001s } } }`
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
	// The proxy's own reply after attempts (connect failures) too.
	dead := strings.Replace(counted, "port_value: "+portOf(addr), "port_value: "+portOf(closedPort(t)), 1)
	p = startProxy(t, dead)
	resp, err = http.Get(p.url("ingress") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("x-envoy-attempt-count") != "3" {
		t.Fatalf("connect failures: %d, x-envoy-attempt-count %q; want 503 after 3 attempts", resp.StatusCode, resp.Header.Get("x-envoy-attempt-count"))
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
	// The line is written as the stream ends, which may be just after
	// the client has its answer.
	testutil.Eventually(t, 5*time.Second, "the access log line", func() bool {
		p.srv.FlushLogs()
		b, _ := os.ReadFile(logFile)
		return len(b) > 0
	})
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

// TestRetryPreviousHosts: with the previous_hosts retry host predicate
// (and host_selection_retry_max_attempts), each retry goes to a host the
// request has not tried: three attempts over three failing hosts reach
// all three, for every request.
func TestRetryPreviousHosts(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]map[string]bool{} // request id -> hosts
	var addrs []string
	for i := range 3 {
		host := fmt.Sprint("h", i)
		addrs = append(addrs, serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			id := r.Header.Get("x-test-id")
			if hits[id] == nil {
				hits[id] = map[string]bool{}
			}
			hits[id][host] = true
			mu.Unlock()
			w.WriteHeader(503)
		}, false))
	}
	routes := `              - match: { prefix: "/" }
                route:
                  cluster: backend
                  retry_policy:
                    retry_on: 5xx
                    num_retries: 2
                    retry_back_off: { base_interval: 0.001s }
                    host_selection_retry_max_attempts: 1000
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config: { "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate }`
	y := httpBootstrap(addrs[0], routeCfg{routes: routes}, "    lb_policy: RANDOM")
	// One heavy host: weighted RANDOM picks it again and again (it has
	// no notion of the last host), so without the predicate attempts
	// repeat it.
	for i, a := range addrs[1:] {
		host, port, _ := net.SplitHostPort(a)
		y = strings.Replace(y, "      - lb_endpoints:\n", fmt.Sprintf("      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: %s, port_value: %s } } }\n          load_balancing_weight: %d\n", host, port, 1+9*i), 1)
	}
	p := startProxy(t, y)
	const n = 20
	for i := range n {
		req, _ := http.NewRequest("GET", p.url("ingress")+"/", nil)
		req.Header.Set("x-test-id", fmt.Sprint(i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Fatalf("request %d: %d, want the last attempt's 503", i, resp.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if got := len(hits[fmt.Sprint(i)]); got != 3 {
			t.Errorf("request %d reached %d distinct hosts in 3 attempts: %v", i, got, hits[fmt.Sprint(i)])
		}
	}
	bad := strings.Replace(y, "previous_hosts.v3.PreviousHostsPredicate", "omit_canary_hosts.v3.OmitCanaryHostsPredicate", 1)
	if _, err := buildServer(bad); err == nil || !strings.Contains(err.Error(), "retry_host_predicate[0]") {
		t.Errorf("an unsupported retry host predicate: %v", err)
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// TestPathNormalization: normalize_path (RFC 3986: dot segments, escaped
// unreserved characters, backslashes), merge_slashes and
// path_with_escaped_slashes_action apply before routing, so a route (or
// RBAC) on /admin sees every spelling of it, and the upstream gets the
// normalized path with its query untouched; REJECT_REQUEST answers 400.
// Without them the path goes as it came.
func TestPathNormalization(t *testing.T) {
	seen := make(chan string, 16) // (a regression must fail, not block the upstream)
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { seen <- r.RequestURI }, false)
	routes := `              - match: { path: "/admin" }
                direct_response: { status: 403, body: { inline_string: "admin" } }
              - match: { prefix: "/" }
                route: { cluster: backend }`
	opts := `          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST`
	p := startProxy(t, httpBootstrap(up, routeCfg{routes: routes, hcmOpts: opts}, ""))
	get := func(p *proxy, path string) string {
		out, _ := rawExchange(t, p.addr("ingress"), "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		return out
	}
	for _, path := range []string{"/public/../admin", "/%61dmin", "//admin", "/a/.%2E/admin", "/x\\..\\admin", "/admin/."} {
		if out := get(p, path); !strings.HasPrefix(out, "HTTP/1.1 403") && !(path == "/admin/." && strings.HasPrefix(out, "HTTP/1.1 200")) {
			t.Errorf("%s: %.40q, want the /admin route's 403", path, out)
		}
	}
	// "/admin/." is "/admin/": not the exact /admin route.
	<-seen
	if out := get(p, "/x/./y//z?q=/../%2F"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("a normalized path: %.40q", out)
	}
	if got := <-seen; got != "/x/y/z?q=/../%2F" {
		t.Errorf("the upstream got %q, want /x/y/z?q=/../%%2F (the query as it came)", got)
	}
	if out := get(p, "/a%2Fb"); !strings.HasPrefix(out, "HTTP/1.1 400") {
		t.Errorf("an escaped slash under REJECT_REQUEST: %.40q", out)
	}
	if got := p.stat("http.ingress.downstream_rq_failed_path_normalization"); got != 1 {
		t.Errorf("downstream_rq_failed_path_normalization = %d", got)
	}
	plain := startProxy(t, httpBootstrap(up, routeCfg{routes: routes}, ""))
	if out := get(plain, "/public/../admin"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("without normalize_path: %.40q", out)
	}
	if got := <-seen; got != "/public/../admin" {
		t.Errorf("without normalize_path the upstream got %q", got)
	}
	bad := strings.Replace(httpBootstrap(up, routeCfg{routes: routes, hcmOpts: opts}, ""), "REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", 1)
	if _, err := buildServer(bad); err == nil || !strings.Contains(err.Error(), "path_with_escaped_slashes_action") {
		t.Errorf("UNESCAPE_AND_REDIRECT: %v", err)
	}
}

// TestAcceptBatchServesBursts: a listener with
// max_connections_to_accept_per_socket_event: 1 serves a burst of new
// connections under both I/O models; none waits on the bound.
func TestAcceptBatchServesBursts(t *testing.T) {
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }, false)
	for _, model := range []string{"netpoll", "epoll"} {
		t.Run(model, func(t *testing.T) {
			y := httpBootstrap(addr, routeCfg{}, "")
			y = strings.Replace(y, "    filter_chains:", "    max_connections_to_accept_per_socket_event: 1\n    metadata: { filter_metadata: { strait: { io_model: "+model+" } } }\n    filter_chains:", 1)
			p := startProxy(t, y)
			var wg sync.WaitGroup
			errs := make(chan error, 40)
			for i := 0; i < 40; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
					resp, err := c.Get(p.url("ingress") + "/")
					if err != nil {
						errs <- err
						return
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						errs <- fmt.Errorf("status %d", resp.StatusCode)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		})
	}
}

// TestDNSClusterResolver: a STRICT_DNS cluster with typed_dns_resolver_config
// (c-ares) asks the resolvers it names, and with respect_dns_ttl
// re-resolves when the answer's TTL runs out rather than at
// dns_refresh_rate; dns_jitter is accepted and only adds to the wait.
func TestDNSClusterResolver(t *testing.T) {
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }, false)
	records := map[string]testutil.DNSRecord{"backend.test.": {IPs: []string{"127.0.0.1"}, TTL: 1}}
	cluster := func(dns *testutil.DNSServer, extra string) string {
		dnsHost, dnsPort, _ := net.SplitHostPort(dns.Addr)
		y := httpBootstrap(addr, routeCfg{}, `    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 60s
    dns_jitter: 0.05s
`+extra+`    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers: [ { socket_address: { address: `+dnsHost+`, port_value: `+dnsPort+` } } ]
        udp_max_queries: 100`)
		return strings.Replace(y, "address: 127.0.0.1, port_value: "+portOf(addr), "address: backend.test., port_value: "+portOf(addr), 1)
	}
	dns := testutil.StartDNS(t, records)
	p := startProxy(t, cluster(dns, "    respect_dns_ttl: true\n"))
	if code, body := get(t, p.url("ingress")+"/"); code != 200 || body != "ok" {
		t.Fatalf("through the resolved name: %d %q", code, body)
	}
	testutil.Eventually(t, 5*time.Second, "a re-resolution after the 1 s TTL", func() bool { return dns.Queries.Load() >= 3 })

	dns = testutil.StartDNS(t, records) // the first proxy goes on asking its own
	p = startProxy(t, cluster(dns, ""))
	if code, _ := get(t, p.url("ingress")+"/"); code != 200 {
		t.Fatalf("without respect_dns_ttl: %d", code)
	}
	time.Sleep(2500 * time.Millisecond)
	if n := dns.Queries.Load(); n != 1 {
		t.Fatalf("without respect_dns_ttl the name was asked %d times in 2.5 s; want once (refresh 60 s)", n)
	}
}
