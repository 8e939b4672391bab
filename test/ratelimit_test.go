package test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// envoy.filters.http.local_ratelimit end to end (issue 13).

func rateLimitFilter(cfg string) string {
	return `          - name: envoy.filters.http.local_ratelimit
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, ` + cfg + ` }
`
}

const rlOn = `filter_enabled: { default_value: { numerator: 100 } }, filter_enforced: { default_value: { numerator: 100 } }`

func TestLocalRateLimit(t *testing.T) {
	up := testutil.StartUpstream(t)
	routes := `              - match: { prefix: "/own" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                    stat_prefix: own
                    token_bucket: { max_tokens: 1, fill_interval: 60s }
                    filter_enabled: { default_value: { numerator: 100 } }
                    filter_enforced: { default_value: { numerator: 100 } }
` + allRoutes
	p := startProxy(t, filterBootstrap(up.Addr, rateLimitFilter(`stat_prefix: main, token_bucket: { max_tokens: 3, fill_interval: 60s }, enable_x_ratelimit_headers: DRAFT_VERSION_03, `+rlOn), routes))
	var codes []int
	var remaining []string
	for i := 0; i < 5; i++ {
		resp, body := doReq(t, "GET", p.url("in")+"/x", "")
		codes = append(codes, resp.StatusCode)
		remaining = append(remaining, resp.Header.Get("x-ratelimit-remaining"))
		if resp.StatusCode == 429 && (body != "local_rate_limited\n" || resp.Header.Get("x-envoy-ratelimited") != "true" || resp.Header.Get("x-ratelimit-limit") != "3") {
			t.Fatalf("429: %q %v", body, resp.Header)
		}
	}
	if got := fmt.Sprint(codes); got != "[200 200 200 429 429]" || strings.Join(remaining, ",") != "2,1,0,0,0" {
		t.Fatalf("codes %v, remaining %v", codes, remaining)
	}
	// The route's own bucket.
	if resp, _ := doReq(t, "GET", p.url("in")+"/own", ""); resp.StatusCode != 200 {
		t.Fatalf("own bucket, first: %d", resp.StatusCode)
	}
	if resp, _ := doReq(t, "GET", p.url("in")+"/own", ""); resp.StatusCode != 429 {
		t.Fatalf("own bucket, second: %d", resp.StatusCode)
	}
	for name, want := range map[string]int64{"main.http_local_rate_limit.ok": 3, "main.http_local_rate_limit.rate_limited": 2,
		"main.http_local_rate_limit.enforced": 2, "own.http_local_rate_limit.rate_limited": 1} {
		if got := p.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	// Enabled but not enforced: counted, never refused.
	p2 := startProxy(t, filterBootstrap(up.Addr, rateLimitFilter(`stat_prefix: shadow, token_bucket: { max_tokens: 1, fill_interval: 60s }, filter_enabled: { default_value: { numerator: 100 } }`), allRoutes))
	for i := 0; i < 3; i++ {
		if resp, _ := doReq(t, "GET", p2.url("in")+"/x", ""); resp.StatusCode != 200 {
			t.Fatalf("not enforced: %d", resp.StatusCode)
		}
	}
	if got := p2.stat("shadow.http_local_rate_limit.rate_limited"); got != 2 {
		t.Fatalf("rate_limited = %d", got)
	}
	for _, c := range []struct{ cfg, want string }{
		{`stat_prefix: x, token_bucket: { max_tokens: 1, fill_interval: 0.01s }`, "token_bucket.fill_interval: at least 50ms"},
		{`stat_prefix: x, token_bucket: { max_tokens: 1, fill_interval: 1s }, local_rate_limit_per_downstream_connection: true`, "local_rate_limit_per_downstream_connection: not supported yet"},
		{`stat_prefix: x`, "token_bucket: required"},
	} {
		if _, err := buildServer(filterBootstrap(up.Addr, rateLimitFilter(c.cfg), allRoutes)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestNetworkLocalRateLimit: envoy.filters.network.local_ratelimit in
// front of tcp_proxy: each connection takes a token, one without is
// closed before its bytes go on; share_key shares a bucket between two
// listeners; runtime_enabled turns it off; both I/O models.
func TestNetworkLocalRateLimit(t *testing.T) {
	echo := testutil.StartEcho(t)
	listener := func(name, lrl string) string {
		return l4Listener(name, "envoy.filters.network.local_ratelimit",
			`"@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit, stat_prefix: `+name+`, `+lrl, "echo")
	}
	bucket := `token_bucket: { max_tokens: 3, fill_interval: 3600s }`
	// (Shared buckets are process-wide: a key of this run's own.)
	key := fmt.Sprintf("pair-%d", time.Now().UnixNano())
	p := startProxy(t, `
layered_runtime:
  layers:
  - name: static
    static_layer: { lrl.off: false }
static_resources:
  listeners:
`+listener("own", bucket)+
		listener("a", bucket+`, share_key: `+key)+listener("b", bucket+`, share_key: `+key)+
		listener("dark", `token_bucket: { max_tokens: 1, fill_interval: 3600s }, runtime_enabled: { default_value: true, runtime_key: lrl.off }`)+`  clusters:
`+staticCluster("echo", echo))
	// talk reports whether the connection was proxied (its bytes echoed).
	talk := func(listener string) bool {
		c, err := net.Dial("tcp", p.addr(listener))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "hi")
		b := make([]byte, 2)
		_, err = io.ReadFull(c, b)
		return err == nil && string(b) == "hi"
	}
	var got []bool
	for i := 0; i < 5; i++ {
		got = append(got, talk("own"))
	}
	if fmt.Sprint(got) != "[true true true false false]" {
		t.Fatalf("own bucket of 3: %v", got)
	}
	// a and b share three tokens.
	got = []bool{talk("a"), talk("b"), talk("a"), talk("b"), talk("a")}
	if fmt.Sprint(got) != "[true true true false false]" {
		t.Fatalf("shared bucket of 3: %v", got)
	}
	for i := 0; i < 3; i++ {
		if !talk("dark") {
			t.Fatalf("runtime_enabled false: connection %d refused", i)
		}
	}
	for name, want := range map[string]int64{"own": 2, "a": 1, "b": 1, "dark": 0} {
		if n := p.stat("local_ratelimit." + name + ".rate_limited"); n != want {
			t.Errorf("local_ratelimit.%s.rate_limited = %d, want %d", name, n, want)
		}
	}
}
