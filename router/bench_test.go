package router

import (
	"fmt"
	"strings"
	"testing"
)

// bigTableYAML has hosts virtual hosts of routes prefix routes each; host i
// is "host-i.example.com" and its routes are "/svc-j/".
func bigTableYAML(hosts, routes int) string {
	var b strings.Builder
	b.WriteString("virtual_hosts:\n")
	for i := range hosts {
		fmt.Fprintf(&b, "- name: vh-%d\n  domains: [\"host-%d.example.com\"]\n  routes:\n", i, i)
		for j := range routes {
			fmt.Fprintf(&b, "  - {name: r-%d-%d, match: {prefix: \"/svc-%d/\"}, route: {cluster: c-%d}}\n", i, j, j, j)
		}
	}
	return b.String()
}

func BenchmarkMatchPrefix(b *testing.B) {
	tbl := mustCompile(b, bigTableYAML(50, 20), Options{})
	h := request("host-49.example.com", "/svc-19/items?page=2")
	if got := routeName(tbl.Match(h)); got != "r-49-19" {
		b.Fatalf("matched %s", got)
	}
	b.ReportAllocs()
	for b.Loop() {
		tbl.Match(h)
	}
}

func BenchmarkMatchExactDomain(b *testing.B) {
	tbl := mustCompile(b, bigTableYAML(50, 1)+`- name: wild
  domains: ["*.example.org", "*"]
  routes:
  - {match: {prefix: "/"}, route: {cluster: w}}
`, Options{})
	h := request("host-25.example.com", "/svc-0/x")
	if got := routeName(tbl.Match(h)); got != "r-25-0" {
		b.Fatalf("matched %s", got)
	}
	b.ReportAllocs()
	for b.Loop() {
		tbl.Match(h)
	}
}

func BenchmarkMatchRegex(b *testing.B) {
	tbl := mustCompile(b, vh(`
  - {name: other, match: {safe_regex: {regex: "/other/[0-9]+"}}, route: {cluster: a}}
  - {name: user, match: {safe_regex: {regex: "/users/[0-9]+/orders/[a-z0-9-]+"}}, route: {cluster: a}}
`), Options{})
	h := request("x", "/users/12345/orders/ab-12?x=1")
	if got := routeName(tbl.Match(h)); got != "user" {
		b.Fatalf("matched %s", got)
	}
	b.ReportAllocs()
	for b.Loop() {
		tbl.Match(h)
	}
}

func BenchmarkPickCluster(b *testing.B) {
	tbl := mustCompile(b, vh(`
  - match: {prefix: "/"}
    route:
      weighted_clusters:
        clusters:
        - {name: a, weight: 10}
        - {name: b, weight: 20}
        - {name: c, weight: 30}
        - {name: d, weight: 40}
`), Options{})
	r := tbl.Match(request("x", "/"))
	b.ReportAllocs()
	var n uint64
	for b.Loop() {
		n += 0x9e3779b97f4a7c15
		r.PickCluster(n)
	}
}
