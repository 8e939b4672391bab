package router

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestPickCluster(t *testing.T) {
	tbl := mustCompile(t, vh(`
  - name: weighted
    match: {prefix: "/w"}
    route:
      weighted_clusters:
        clusters:
        - {name: a, weight: 1}
        - {name: b, weight: 2}
        - {name: never, weight: 0}
        - {name: d, weight: 7}
  - name: single
    match: {prefix: "/"}
    route: {cluster: only}
`), Options{})
	w := tbl.Match(request("x", "/w"))
	picks := []struct {
		r    uint64
		want string
	}{
		{0, "a"}, {1, "b"}, {2, "b"}, {3, "d"}, {9, "d"}, {10, "a"}, {12, "b"},
		{^uint64(0), "d"}, // 2^64-1 ≡ 5 (mod 10)
	}
	for _, p := range picks {
		if got := w.PickCluster(p.r); got != p.want {
			t.Errorf("PickCluster(%d) = %s, want %s", p.r, got, p.want)
		}
	}
	counts := map[string]int{}
	for r := uint64(0); r < 10000; r++ {
		counts[w.PickCluster(r*7919)]++ // a stride coprime with 10 visits every residue
	}
	want := map[string]int{"a": 1000, "b": 2000, "d": 7000}
	for name, n := range want {
		if counts[name] != n {
			t.Errorf("cluster %s picked %d times, want %d (%v)", name, counts[name], n, counts)
		}
	}
	if counts["never"] != 0 {
		t.Errorf("zero-weight cluster picked %d times", counts["never"])
	}
	single := tbl.Match(request("x", "/"))
	if got := single.PickCluster(12345); got != "only" || single.Cluster != "only" {
		t.Errorf("single PickCluster = %s", got)
	}
	if len(w.Weighted) != 4 || w.Weighted[1] != (WeightedCluster{Name: "b", Weight: 2}) {
		t.Errorf("Weighted = %+v", w.Weighted)
	}
}

const redirectYAML = `
virtual_hosts:
- name: r
  domains: ["*"]
  routes:
  - {match: {prefix: "/https"}, redirect: {https_redirect: true}}
  - {match: {prefix: "/scheme"}, redirect: {scheme_redirect: "WS", response_code: FOUND}}
  - {match: {prefix: "/hostport"}, redirect: {host_redirect: "new.example:1", port_redirect: 8443}}
  - {match: {prefix: "/host"}, redirect: {host_redirect: "new.example", response_code: SEE_OTHER}}
  - {match: {prefix: "/port"}, redirect: {port_redirect: 8080, response_code: TEMPORARY_REDIRECT}}
  - {match: {prefix: "/pathq"}, redirect: {path_redirect: "/new?fixed=1", strip_query: true}}
  - {match: {prefix: "/path"}, redirect: {path_redirect: "/new", response_code: PERMANENT_REDIRECT}}
  - {match: {prefix: "/spath"}, redirect: {path_redirect: "/new", strip_query: true}}
  - {match: {prefix: "/old/"}, redirect: {prefix_rewrite: "/new/"}}
  - {match: {prefix: "/strip"}, redirect: {strip_query: true}}
  - {match: {safe_regex: {regex: "/rx/.*"}}, redirect: {regex_rewrite: {pattern: {regex: "^/rx/(.*)$"}, substitution: '/v2/\1'}}}
  - {match: {prefix: "/rel"}, redirect: {path_redirect: "rel"}}
`

func TestRedirectLocation(t *testing.T) {
	tbl := mustCompile(t, redirectYAML, Options{})
	cases := []struct {
		name      string
		authority string
		path      string
		kv        []string
		want      string
		status    int
	}{
		{"https keeps host and path", "a.com", "/https/x?q=1", nil, "https://a.com/https/x?q=1", 301},
		{"https drops http default port", "a.com:80", "/https", nil, "https://a.com/https", 301},
		{"https keeps other port", "a.com:8080", "/https", nil, "https://a.com:8080/https", 301},
		{"https drops port by forwarded proto", "a.com:80", "/https", []string{"x-forwarded-proto", "http"}, "https://a.com/https", 301},
		{"https keeps 443 when already https", "a.com:443", "/https", []string{"x-forwarded-proto", "https"}, "https://a.com:443/https", 301},
		{"scheme redirect lowercased", "a.com", "/scheme", nil, "ws://a.com/scheme", 302},
		{"host redirect", "a.com:81", "/host/y", nil, "http://new.example/host/y", 303},
		{"host redirect with port redirect", "a.com", "/hostport", nil, "http://new.example:8443/hostport", 301},
		{"port redirect replaces port", "a.com:81", "/port", nil, "http://a.com:8080/port", 307},
		{"port redirect adds port", "[::1]", "/port", nil, "http://[::1]:8080/port", 307},
		{"path redirect keeps query", "a.com", "/path?q=1", nil, "http://a.com/new?q=1", 308},
		{"path redirect own query wins over strip", "a.com", "/pathq?q=1", nil, "http://a.com/new?fixed=1", 301},
		{"path redirect strip query", "a.com", "/spath?q=1", nil, "http://a.com/new", 301},
		{"prefix rewrite", "a.com", "/old/x/y?q=1", nil, "http://a.com/new/x/y?q=1", 301},
		{"prefix rewrite case-insensitive path", "a.com", "/old/", nil, "http://a.com/new/", 301},
		{"strip query", "a.com", "/strip?q=1", nil, "http://a.com/strip", 301},
		{"regex rewrite", "a.com", "/rx/a/b?z", nil, "http://a.com/v2/a/b?z", 301},
		{"relative path gets a slash", "a.com", "/rel", nil, "http://a.com/rel", 301},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := request(tc.authority, tc.path, tc.kv...)
			r := tbl.Match(h)
			if r == nil || r.Redirect == nil {
				t.Fatalf("no redirect route for %s", tc.path)
			}
			if got := r.Redirect.Location(h); got != tc.want {
				t.Errorf("Location = %q, want %q", got, tc.want)
			}
			if r.Redirect.Status != tc.status {
				t.Errorf("Status = %d, want %d", r.Redirect.Status, tc.status)
			}
		})
	}
}

func TestRewritePath(t *testing.T) {
	tbl := mustCompile(t, vh(`
  - {name: prefix, match: {prefix: "/api/"}, route: {cluster: a, prefix_rewrite: "/v2/"}}
  - {name: prefix-ci, match: {prefix: "/CI/", case_sensitive: false}, route: {cluster: a, prefix_rewrite: "/"}}
  - {name: sep, match: {path_separated_prefix: "/sep"}, route: {cluster: a, prefix_rewrite: "/other"}}
  - {name: path, match: {path: "/exact"}, route: {cluster: a, prefix_rewrite: "/replaced"}}
  - {name: regex-prefix, match: {safe_regex: {regex: "/rp/[a-z]+"}}, route: {cluster: a, prefix_rewrite: "/whole"}}
  - name: regex
    match: {prefix: "/service/"}
    route: {cluster: a, regex_rewrite: {pattern: {regex: "^/service/([^/]+)(/.*)$"}, substitution: '\2/instance/\1'}}
  - name: regex-all
    match: {prefix: "/aaa"}
    route: {cluster: a, regex_rewrite: {pattern: {regex: "a"}, substitution: 'b'}}
  - name: regex-dollar
    match: {prefix: "/cost"}
    route: {cluster: a, regex_rewrite: {pattern: {regex: "cost"}, substitution: '$5\\\0'}}
  - name: regex-empty
    match: {prefix: "/gone"}
    route: {cluster: a, regex_rewrite: {pattern: {regex: "^/gone$"}, substitution: ""}}
  - {name: none, match: {prefix: "/"}, route: {cluster: a}}
`), Options{})
	cases := []struct {
		path, want string
		rewrites   bool
	}{
		{"/api/users?x=1", "/v2/users?x=1", true},
		{"/ci/a", "/a", true},
		{"/sep/x?q", "/other/x?q", true},
		{"/sep", "/other", true},
		{"/exact?q=1", "/replaced?q=1", true},
		{"/rp/abc?k=v", "/whole?k=v", true},
		{"/service/foo/v1/api?q=1", "/v1/api/instance/foo?q=1", true},
		{"/aaa", "/bbb", true},
		{"/cost", "/$5\\cost", true},
		{"/gone?q", "/gone?q", true},
		{"/plain?q", "/plain?q", false},
	}
	for _, tc := range cases {
		r := tbl.Match(request("x", tc.path))
		if r == nil {
			t.Fatalf("%s: no route", tc.path)
		}
		got := r.RewritePath([]byte("keep:"), []byte(tc.path))
		if string(got) != "keep:"+tc.want {
			t.Errorf("%s (route %s): RewritePath = %q, want %q", tc.path, r.Name, got, "keep:"+tc.want)
		}
		if r.RewritesPath() != tc.rewrites {
			t.Errorf("%s: RewritesPath = %v", tc.path, r.RewritesPath())
		}
	}
	// A path that no longer starts with the matched prefix is left alone.
	r := tbl.Match(request("x", "/api/x"))
	if got := r.RewritePath(nil, []byte("/elsewhere")); string(got) != "/elsewhere" {
		t.Errorf("foreign path rewritten to %q", got)
	}
}

func TestRouteActionFields(t *testing.T) {
	tbl := mustCompile(t, `
typed_per_filter_config:
  f1: {"@type": type.googleapis.com/google.protobuf.StringValue, value: rc}
  f2: {"@type": type.googleapis.com/google.protobuf.StringValue, value: rc}
virtual_hosts:
- name: vh
  domains: ["*"]
  retry_policy: {retry_on: "reset"}
  typed_per_filter_config:
    f2: {"@type": type.googleapis.com/google.protobuf.StringValue, value: vhost}
    f3: {"@type": type.googleapis.com/google.protobuf.StringValue, value: vhost}
  routes:
  - name: full
    match: {prefix: "/full"}
    typed_per_filter_config:
      f3: {"@type": type.googleapis.com/google.protobuf.StringValue, value: route}
    route:
      cluster: a
      timeout: 3s
      idle_timeout: 0s
      host_rewrite_literal: up.example
      append_x_forwarded_host: true
      cluster_not_found_response_code: NOT_FOUND
      retry_policy: {retry_on: "5xx", num_retries: 4}
  - name: auto
    match: {prefix: "/auto"}
    route: {cluster: a, timeout: 0s, idle_timeout: 20s, auto_host_rewrite: true}
  - name: defaults
    match: {prefix: "/"}
    route: {cluster: a}
`, Options{})
	full := tbl.Match(request("x", "/full"))
	if full.Timeout != 3*time.Second || full.IdleTimeout != IdleTimeoutDisabled {
		t.Errorf("full: timeouts %v %v", full.Timeout, full.IdleTimeout)
	}
	if h, ok := full.RewriteHost(); h != "up.example" || !ok || full.AutoHostRewrite || !full.AppendXForwardedHost {
		t.Errorf("full: host rewrite %q %v auto %v xfh %v", h, ok, full.AutoHostRewrite, full.AppendXForwardedHost)
	}
	if full.ClusterNotFoundStatus != 404 || full.Retry.On != Retry5xx || full.Retry.NumRetries != 4 {
		t.Errorf("full: %d %+v", full.ClusterNotFoundStatus, full.Retry)
	}
	if full.VirtualHost.Name != "vh" {
		t.Errorf("full: virtual host %q", full.VirtualHost.Name)
	}
	wantFilters := map[string]string{"f1": "rc", "f2": "vhost", "f3": "route"}
	checkFilters(t, "full", full, wantFilters)

	auto := tbl.Match(request("x", "/auto"))
	if auto.Timeout != 0 || auto.IdleTimeout != 20*time.Second || !auto.AutoHostRewrite {
		t.Errorf("auto: %v %v %v", auto.Timeout, auto.IdleTimeout, auto.AutoHostRewrite)
	}
	if _, ok := auto.RewriteHost(); ok {
		t.Error("auto: RewriteHost set")
	}
	def := tbl.Match(request("x", "/"))
	if def.Timeout != DefaultTimeout || def.IdleTimeout != 0 || def.ClusterNotFoundStatus != 503 {
		t.Errorf("defaults: %v %v %d", def.Timeout, def.IdleTimeout, def.ClusterNotFoundStatus)
	}
	if def.Retry == nil || def.Retry.On != RetryReset {
		t.Errorf("defaults: retry %+v, want the virtual host's", def.Retry)
	}
	checkFilters(t, "defaults", def, map[string]string{"f1": "rc", "f2": "vhost", "f3": "vhost"})
}

func checkFilters(t *testing.T, name string, r *Route, want map[string]string) {
	t.Helper()
	if len(r.PerFilterConfig) != len(want) {
		t.Errorf("%s: PerFilterConfig has %d entries, want %d", name, len(r.PerFilterConfig), len(want))
	}
	for k, v := range want {
		s, ok := r.PerFilterConfig[k].(*wrapperspb.StringValue)
		if !ok || s.GetValue() != v {
			t.Errorf("%s: filter %s = %v, want %q", name, k, r.PerFilterConfig[k], v)
		}
	}
}

func TestNoRetryPolicy(t *testing.T) {
	tbl := mustCompile(t, vh(`
  - {match: {prefix: "/"}, route: {cluster: a}}
`), Options{})
	if r := tbl.Match(request("x", "/")); r.Retry != nil || r.PerFilterConfig != nil {
		t.Fatalf("Retry = %+v, PerFilterConfig = %v", r.Retry, r.PerFilterConfig)
	}
}

// TestRequireTLS: a virtual host's require_tls answers requests that did
// not come over TLS (x-forwarded-proto not https) with a 301 to https,
// host and path as they were; EXTERNAL_ONLY spares internal requests.
func TestRequireTLS(t *testing.T) {
	tbl := mustCompile(t, `
virtual_hosts:
- name: all
  domains: ["all.example"]
  require_tls: ALL
  routes: [ { match: { prefix: "/" }, direct_response: { status: 200 } } ]
- name: ext
  domains: ["ext.example"]
  require_tls: EXTERNAL_ONLY
  routes: [ { match: { prefix: "/" }, direct_response: { status: 200 } } ]
`, Options{})
	for _, tc := range []struct {
		host, path string
		kv         []string
		want       string // "" : the vhost's own route
	}{
		{"all.example", "/p?q=1", []string{"x-forwarded-proto", "http"}, "https://all.example/p?q=1"},
		{"all.example", "/p", nil, "https://all.example/p"},
		{"all.example", "/p", []string{"x-forwarded-proto", "https"}, ""},
		{"ext.example", "/p", []string{"x-forwarded-proto", "http"}, "https://ext.example/p"},
		{"ext.example", "/p", []string{"x-forwarded-proto", "http", "x-envoy-internal", "true"}, ""},
	} {
		r := tbl.Match(request(tc.host, tc.path, tc.kv...))
		switch {
		case r == nil:
			t.Errorf("%s%s %v: no route", tc.host, tc.path, tc.kv)
		case tc.want == "" && r.Redirect != nil:
			t.Errorf("%s%s %v: redirected to %s", tc.host, tc.path, tc.kv, r.Redirect.Location(request(tc.host, tc.path, tc.kv...)))
		case tc.want != "" && (r.Redirect == nil || r.Redirect.Status != 301 || r.Redirect.Location(request(tc.host, tc.path, tc.kv...)) != tc.want):
			t.Errorf("%s%s %v: %+v, want a 301 to %s", tc.host, tc.path, tc.kv, r.Redirect, tc.want)
		}
	}
}
