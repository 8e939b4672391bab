package router

import (
	"fmt"
	"strings"
	"testing"
)

// hostsYAML builds one virtual host per name=domains entry, each with one
// catch-all route named after its host.
func hostsYAML(extra string, hosts ...string) string {
	var b strings.Builder
	b.WriteString(extra + "virtual_hosts:\n")
	for _, h := range hosts {
		name, domains, _ := strings.Cut(h, "=")
		fmt.Fprintf(&b, "- name: %s\n  domains: [%s]\n  routes:\n  - name: %s\n    match: {prefix: \"/\"}\n    route: {cluster: c}\n",
			name, domains, name)
	}
	return b.String()
}

var domainHosts = []string{
	`exact="example.com", "Mixed.Example.COM"`,
	`exact-port="example.com:8080"`,
	`v6="[::1]"`,
	`v6-port="[::1]:9000"`,
	`suffix-short="*.com"`,
	`suffix-long="*.foo.example.com"`,
	`suffix-dash="*-bar.foo.net"`,
	`prefix-short="api.*"`,
	`prefix-long="api.internal.*"`,
	`any="*"`,
}

func TestDomainMatch(t *testing.T) {
	cases := []struct {
		name      string
		opt       Options
		authority string
		want      string
	}{
		{"exact", Options{}, "example.com", "exact"},
		{"exact ignores case of the request", Options{}, "EXAMPLE.com", "exact"},
		{"exact ignores case of the config", Options{}, "mixed.example.com", "exact"},
		{"domain with port", Options{}, "example.com:8080", "exact-port"},
		{"port must match", Options{}, "example.com:9090", "any"},
		{"longest suffix wins", Options{}, "a.foo.example.com", "suffix-long"},
		{"suffix wildcard needs one byte", Options{}, ".foo.example.com", "suffix-short"},
		{"suffix wildcard is not the bare domain", Options{}, "foo.example.com", "suffix-short"},
		{"dash suffix", Options{}, "baz-bar.foo.net", "suffix-dash"},
		{"dash suffix needs one byte", Options{}, "-bar.foo.net", "any"},
		{"suffix beats prefix", Options{}, "api.com", "suffix-short"},
		{"longest prefix wins", Options{}, "api.internal.net", "prefix-long"},
		{"short prefix", Options{}, "api.net", "prefix-short"},
		{"prefix wildcard case", Options{}, "API.Internal.net", "prefix-long"},
		{"prefix wildcard with port", Options{}, "api.net:443", "prefix-short"},
		{"catch-all", Options{}, "other.org", "any"},
		{"no authority", Options{}, "", "any"},
		{"ipv6", Options{}, "[::1]", "v6"},
		{"ipv6 with port", Options{}, "[::1]:9000", "v6-port"},
		{"strip any port", Options{StripAnyHostPort: true}, "example.com:8080", "exact"},
		{"strip any port ipv6", Options{StripAnyHostPort: true}, "[::1]:9000", "v6"},
		{"strip any port keeps bare ipv6", Options{StripAnyHostPort: true}, "::1", "any"},
		{"strip matching port", Options{StripMatchingHostPort: true, ListenerPort: 8080}, "example.com:8080", "exact"},
		{"strip matching port with zeros", Options{StripMatchingHostPort: true, ListenerPort: 8080}, "example.com:08080", "exact"},
		{"strip other port no", Options{StripMatchingHostPort: true, ListenerPort: 8080}, "example.com:9090", "any"},
		{"strip empty port no", Options{StripAnyHostPort: true}, "example.com:", "any"},
	}
	tables := map[Options]*Table{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tbl := tables[tc.opt]
			if tbl == nil {
				tbl = mustCompile(t, hostsYAML("", domainHosts...), tc.opt)
				tables[tc.opt] = tbl
			}
			if got := routeName(tbl.Match(request(tc.authority, "/"))); got != tc.want {
				t.Errorf("authority %q: got %s, want %s", tc.authority, got, tc.want)
			}
		})
	}
}

func TestDomainNoCatchAll(t *testing.T) {
	tbl := mustCompile(t, hostsYAML("", `a="a.com"`), Options{})
	if r := tbl.Match(request("b.com", "/")); r != nil {
		t.Fatalf("got %s, want no route", r.Name)
	}
}

func TestIgnorePortInHostMatching(t *testing.T) {
	tbl := mustCompile(t, hostsYAML("ignore_port_in_host_matching: true\n", `a="a.com"`, `any="*"`), Options{})
	if got := routeName(tbl.Match(request("a.com:1234", "/"))); got != "a" {
		t.Fatalf("got %s, want a", got)
	}
}

func TestLongAuthority(t *testing.T) {
	long := strings.Repeat("x", 300) + ".com"
	tbl := mustCompile(t, hostsYAML("", `long="`+long+`"`, `any="*"`), Options{})
	if got := routeName(tbl.Match(request(strings.ToUpper(long), "/"))); got != "long" {
		t.Fatalf("got %s, want long", got)
	}
}

func TestPortStart(t *testing.T) {
	cases := []struct {
		host string
		want int
	}{
		{"a.com", -1},
		{"a.com:80", 5},
		{"a.com:", -1},
		{"a.com:x1", -1},
		{"[::1]", -1},
		{"[::1]:80", 5},
		{"::1", -1},
		{"", -1},
		{":80", 0},
	}
	for _, tc := range cases {
		if got := portStart([]byte(tc.host)); got != tc.want {
			t.Errorf("portStart(%q) = %d, want %d", tc.host, got, tc.want)
		}
	}
}
