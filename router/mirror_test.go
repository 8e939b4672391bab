package router

import (
	"testing"
)

// TestMirrorPolicies: the most specific level with policies wins whole
// (route over virtual host over route configuration), only routes to a
// cluster mirror, and mirror clusters count as clusters the table needs.
func TestMirrorPolicies(t *testing.T) {
	tb := mustCompile(t, `
request_mirror_policies: [{cluster: global}]
virtual_hosts:
- name: a
  domains: [a]
  request_mirror_policies: [{cluster: vh1}, {cluster_header: X-Shadow-To, disable_shadow_host_suffix_append: true}]
  routes:
  - match: {prefix: /own}
    route: {cluster: c, request_mirror_policies: [{cluster: own, host_rewrite_literal: other.example, trace_sampled: false, runtime_fraction: {default_value: {numerator: 0}}}]}
  - match: {prefix: /redirect}
    redirect: {host_redirect: x}
  - match: {prefix: /}
    route: {weighted_clusters: {clusters: [{name: c, weight: 1}]}}
- name: b
  domains: [b]
  routes:
  - match: {prefix: /}
    route: {cluster: c}
- name: unused
  domains: [u]
  request_mirror_policies: [{cluster: unused}]
  routes:
  - match: {prefix: /}
    direct_response: {status: 200}
`, Options{})
	get := func(host, path string) *Route {
		t.Helper()
		h := request(host, path)
		r := tb.Match(h)
		if r == nil {
			t.Fatalf("%s%s: no route", host, path)
		}
		return r
	}
	names := func(ms []*MirrorPolicy) (out []string) {
		for _, m := range ms {
			out = append(out, m.Cluster+"|"+m.ClusterHeader)
		}
		return out
	}
	if got := names(get("a", "/own").Mirrors); len(got) != 1 || got[0] != "own|" {
		t.Errorf("route level: %v", got)
	}
	if got := names(get("a", "/x").Mirrors); len(got) != 2 || got[0] != "vh1|" || got[1] != "|x-shadow-to" {
		t.Errorf("virtual host level: %v (cluster_header lowercased)", got)
	}
	if got := names(get("b", "/x").Mirrors); len(got) != 1 || got[0] != "global|" {
		t.Errorf("route configuration level: %v", got)
	}
	if m := get("a", "/redirect").Mirrors; m != nil {
		t.Errorf("a redirect mirrors: %v", names(m))
	}
	own := get("a", "/own").Mirrors[0]
	if own.Sampled(0) || own.Sampled(99) {
		t.Error("runtime_fraction 0% sampled a request")
	}
	if own.TraceSampled == nil || *own.TraceSampled {
		t.Error("trace_sampled: false not kept")
	}
	if !get("a", "/x").Mirrors[0].Sampled(12345) {
		t.Error("a policy without runtime_fraction did not sample")
	}
	// (No route mirrors to "unused": validate_clusters does not need it.)
	want := []string{"c", "global", "own", "vh1"}
	if got := tb.ClusterNames(); len(got) != len(want) {
		t.Errorf("cluster names %v, want %v", got, want)
	} else {
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("cluster names %v, want %v", got, want)
				break
			}
		}
	}
	h := request("a", "/")
	h.Set("x-shadow-to", "picked")
	if got := get("a", "/x").Mirrors[1].ClusterFor(h); got != "picked" {
		t.Errorf("ClusterFor = %q", got)
	}
	if got := get("a", "/x").Mirrors[1].ClusterFor(request("a", "/")); got != "" {
		t.Errorf("ClusterFor without the header = %q", got)
	}
}

func TestShadowHost(t *testing.T) {
	suffix := &MirrorPolicy{}
	for in, want := range map[string]string{
		"example.com":      "example.com-shadow",
		"example.com:8080": "example.com-shadow:8080",
		"[::1]:80":         "[::1]-shadow:80",
		"10.0.0.1":         "10.0.0.1-shadow",
	} {
		if got := suffix.ShadowHost([]byte(in)); got != want {
			t.Errorf("ShadowHost(%q) = %q, want %q", in, got, want)
		}
	}
	if got := (&MirrorPolicy{NoShadowSuffix: true}).ShadowHost([]byte("a:1")); got != "a:1" {
		t.Errorf("disable_shadow_host_suffix_append: %q", got)
	}
	if got := (&MirrorPolicy{HostRewrite: "lit"}).ShadowHost([]byte("a:1")); got != "lit" {
		t.Errorf("host_rewrite_literal: %q", got)
	}
}
