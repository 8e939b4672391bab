package router

import (
	"testing"

	"github.com/straitproxy/strait/protocol"
)

// matchYAML has one route per matcher; no catch-all, so "<nil>" means no
// route matched.
const matchYAML = `
virtual_hosts:
- name: m
  domains: ["*"]
  routes:
  - name: exact
    match: {path: "/exact"}
    route: {cluster: c}
  - name: exact-ci
    match: {path: "/CI/Exact", case_sensitive: false}
    route: {cluster: c}
  - name: regex
    match: {safe_regex: {regex: "/re/[0-9]+"}}
    route: {cluster: c}
  - name: regex-ignores-case-flag
    match: {safe_regex: {regex: "/RX"}, case_sensitive: false}
    route: {cluster: c}
  - name: sep
    match: {path_separated_prefix: "/api/dev"}
    route: {cluster: c}
  - name: prefix-ci
    match: {prefix: "/Upper", case_sensitive: false}
    route: {cluster: c}
  - name: prefix-query
    match: {prefix: "/pq?x"}
    route: {cluster: c}
  - name: h-exact
    match: {prefix: "/h/exact", headers: [{name: x-env, string_match: {exact: prod}}]}
    route: {cluster: c}
  - name: h-exact-ic
    match: {prefix: "/h/exact-ic", headers: [{name: X-Env, string_match: {exact: PROD, ignore_case: true}}]}
    route: {cluster: c}
  - name: h-prefix
    match: {prefix: "/h/prefix", headers: [{name: x-v, string_match: {prefix: ab}}]}
    route: {cluster: c}
  - name: h-suffix
    match: {prefix: "/h/suffix", headers: [{name: x-v, string_match: {suffix: yz, ignore_case: true}}]}
    route: {cluster: c}
  - name: h-contains
    match: {prefix: "/h/contains", headers: [{name: x-v, string_match: {contains: mid}}]}
    route: {cluster: c}
  - name: h-contains-ic
    match: {prefix: "/h/cic", headers: [{name: x-v, string_match: {contains: MID, ignore_case: true}}]}
    route: {cluster: c}
  - name: h-regex
    match: {prefix: "/h/regex", headers: [{name: x-v, string_match: {safe_regex: {regex: "v[0-9]"}}}]}
    route: {cluster: c}
  - name: h-present
    match: {prefix: "/h/present", headers: [{name: x-v, present_match: true}]}
    route: {cluster: c}
  - name: h-absent
    match: {prefix: "/h/absent", headers: [{name: x-v, present_match: false}]}
    route: {cluster: c}
  - name: h-nospec
    match: {prefix: "/h/nospec", headers: [{name: x-v}]}
    route: {cluster: c}
  - name: h-range
    match: {prefix: "/h/range", headers: [{name: x-n, range_match: {start: -10, end: 10}}]}
    route: {cluster: c}
  - name: h-invert
    match: {prefix: "/h/invert", headers: [{name: x-v, string_match: {exact: bad}, invert_match: true}]}
    route: {cluster: c}
  - name: h-invert-present
    match: {prefix: "/h/ipresent", headers: [{name: x-v, present_match: true, invert_match: true}]}
    route: {cluster: c}
  - name: h-missing-empty
    match: {prefix: "/h/missing", headers: [{name: x-v, string_match: {safe_regex: {regex: "^$"}}, treat_missing_header_as_empty: true}]}
    route: {cluster: c}
  - name: h-missing-empty-invert
    match: {prefix: "/h/minv", headers: [{name: x-n, range_match: {start: 0, end: 10}, invert_match: true, treat_missing_header_as_empty: true}]}
    route: {cluster: c}
  - name: h-legacy-exact
    match: {prefix: "/h/lexact", headers: [{name: x-v, exact_match: abc}]}
    route: {cluster: c}
  - name: h-legacy-exact-empty
    match: {prefix: "/h/lempty", headers: [{name: x-v, exact_match: ""}]}
    route: {cluster: c}
  - name: h-legacy-prefix
    match: {prefix: "/h/lprefix", headers: [{name: x-v, prefix_match: ab}]}
    route: {cluster: c}
  - name: h-legacy-suffix
    match: {prefix: "/h/lsuffix", headers: [{name: x-v, suffix_match: yz}]}
    route: {cluster: c}
  - name: h-legacy-contains
    match: {prefix: "/h/lcontains", headers: [{name: x-v, contains_match: mid}]}
    route: {cluster: c}
  - name: h-legacy-regex
    match: {prefix: "/h/lregex", headers: [{name: x-v, safe_regex_match: {regex: "a+"}}]}
    route: {cluster: c}
  - name: h-method
    match: {prefix: "/h/method", headers: [{name: ":method", string_match: {exact: POST}}]}
    route: {cluster: c}
  - name: h-host
    match: {prefix: "/h/host", headers: [{name: host, string_match: {exact: m.example}}]}
    route: {cluster: c}
  - name: h-two
    match: {prefix: "/h/two", headers: [{name: x-a, present_match: true}, {name: x-b, string_match: {exact: "1"}}]}
    route: {cluster: c}
  - name: q-exact
    match: {prefix: "/q/exact", query_parameters: [{name: k, string_match: {exact: v}}]}
    route: {cluster: c}
  - name: q-present
    match: {prefix: "/q/present", query_parameters: [{name: k, present_match: true}]}
    route: {cluster: c}
  - name: q-absent
    match: {prefix: "/q/absent", query_parameters: [{name: k, present_match: false}]}
    route: {cluster: c}
  - name: q-nospec
    match: {prefix: "/q/nospec", query_parameters: [{name: k}]}
    route: {cluster: c}
  - name: q-decoded
    match: {prefix: "/q/decoded", query_parameters: [{name: "a b", string_match: {exact: "x&y"}}]}
    route: {cluster: c}
  - name: q-regex
    match: {prefix: "/q/regex", query_parameters: [{name: k, string_match: {safe_regex: {regex: "[0-9]+"}}}]}
    route: {cluster: c}
`

// routeMatchCases are requests against matchYAML and the route each must match.
var routeMatchCases = []struct {
	name string
	path string
	kv   []string
	want string
}{
	{"path exact", "/exact", nil, "exact"},
	{"path exact with query", "/exact?a=b", nil, "exact"},
	{"path exact with fragment", "/exact#top", nil, "exact"},
	{"path exact longer", "/exact/more", nil, "<nil>"},
	{"path exact is case sensitive", "/EXACT", nil, "<nil>"},
	{"path case insensitive", "/ci/EXACT", nil, "exact-ci"},
	{"regex full match", "/re/123", nil, "regex"},
	{"regex full match with query", "/re/123?x=1", nil, "regex"},
	{"regex must match whole path", "/re/123x", nil, "<nil>"},
	{"regex ignores case_sensitive", "/rx", nil, "<nil>"},
	{"separated prefix alone", "/api/dev", nil, "sep"},
	{"separated prefix slash", "/api/dev/v1", nil, "sep"},
	{"separated prefix query", "/api/dev?x=1", nil, "sep"},
	{"separated prefix not a segment", "/api/developer", nil, "<nil>"},
	{"prefix case insensitive", "/uPPER/x", nil, "prefix-ci"},
	{"prefix sees the query", "/pq?x=1", nil, "prefix-query"},

	{"header exact", "/h/exact", []string{"x-env", "prod"}, "h-exact"},
	{"header exact wrong value", "/h/exact", []string{"x-env", "dev"}, "<nil>"},
	{"header exact is case sensitive", "/h/exact", []string{"x-env", "PROD"}, "<nil>"},
	{"header exact missing", "/h/exact", nil, "<nil>"},
	{"header multi-value joined", "/h/exact", []string{"x-env", "prod", "x-env", "dev"}, "<nil>"},
	{"header exact ignore case", "/h/exact-ic", []string{"x-env", "Prod"}, "h-exact-ic"},
	{"header prefix", "/h/prefix", []string{"x-v", "abc"}, "h-prefix"},
	{"header prefix no", "/h/prefix", []string{"x-v", "xab"}, "<nil>"},
	{"header suffix ignore case", "/h/suffix", []string{"x-v", "xYZ"}, "h-suffix"},
	{"header contains", "/h/contains", []string{"x-v", "a-mid-b"}, "h-contains"},
	{"header contains no", "/h/contains", []string{"x-v", "a-MID-b"}, "<nil>"},
	{"header contains ignore case", "/h/cic", []string{"x-v", "a-mId-b"}, "h-contains-ic"},
	{"header regex is a full match", "/h/regex", []string{"x-v", "v1"}, "h-regex"},
	{"header regex partial no", "/h/regex", []string{"x-v", "v12"}, "<nil>"},
	{"header present", "/h/present", []string{"x-v", ""}, "h-present"},
	{"header present missing", "/h/present", nil, "<nil>"},
	{"header absent", "/h/absent", nil, "h-absent"},
	{"header absent but present", "/h/absent", []string{"x-v", "1"}, "<nil>"},
	{"header no specifier means present", "/h/nospec", []string{"x-v", "1"}, "h-nospec"},
	{"header no specifier missing", "/h/nospec", nil, "<nil>"},
	{"header range in", "/h/range", []string{"x-n", "-10"}, "h-range"},
	{"header range end excluded", "/h/range", []string{"x-n", "10"}, "<nil>"},
	{"header range plus sign", "/h/range", []string{"x-n", "+9"}, "h-range"},
	{"header range not a number", "/h/range", []string{"x-n", "5x"}, "<nil>"},
	{"header range overflow", "/h/range", []string{"x-n", "99999999999999999999"}, "<nil>"},
	{"header invert", "/h/invert", []string{"x-v", "good"}, "h-invert"},
	{"header invert of a match", "/h/invert", []string{"x-v", "bad"}, "<nil>"},
	{"header invert missing never matches", "/h/invert", nil, "<nil>"},
	{"header invert present missing", "/h/ipresent", nil, "h-invert-present"},
	{"header invert present present", "/h/ipresent", []string{"x-v", "1"}, "<nil>"},
	{"header missing as empty", "/h/missing", nil, "h-missing-empty"},
	{"header missing as empty, present", "/h/missing", []string{"x-v", "1"}, "<nil>"},
	{"header missing as empty inverted", "/h/minv", nil, "h-missing-empty-invert"},
	{"header legacy exact", "/h/lexact", []string{"x-v", "abc"}, "h-legacy-exact"},
	{"header legacy exact empty matches any", "/h/lempty", []string{"x-v", "abc"}, "h-legacy-exact-empty"},
	{"header legacy exact empty needs the header", "/h/lempty", nil, "<nil>"},
	{"header legacy prefix", "/h/lprefix", []string{"x-v", "abz"}, "h-legacy-prefix"},
	{"header legacy suffix", "/h/lsuffix", []string{"x-v", "xyz"}, "h-legacy-suffix"},
	{"header legacy contains", "/h/lcontains", []string{"x-v", "amidb"}, "h-legacy-contains"},
	{"header legacy regex", "/h/lregex", []string{"x-v", "aaa"}, "h-legacy-regex"},
	{"header pseudo method", "/h/method", nil, "<nil>"},
	{"header named host reads authority", "/h/host", nil, "h-host"},
	{"all headers must match", "/h/two", []string{"x-a", "", "x-b", "1"}, "h-two"},
	{"all headers must match, one fails", "/h/two", []string{"x-a", "", "x-b", "2"}, "<nil>"},

	{"query exact", "/q/exact?a=1&k=v", nil, "q-exact"},
	{"query first value counts", "/q/exact?k=w&k=v", nil, "<nil>"},
	{"query exact fragment", "/q/exact?k=v#frag", nil, "q-exact"},
	{"query missing", "/q/exact?kk=v", nil, "<nil>"},
	{"query no query", "/q/exact", nil, "<nil>"},
	{"query present without value", "/q/present?k", nil, "q-present"},
	{"query present missing", "/q/present?j=1", nil, "<nil>"},
	{"query absent", "/q/absent?j=1", nil, "q-absent"},
	{"query absent but present", "/q/absent?k=1", nil, "<nil>"},
	{"query no specifier", "/q/nospec?k=", nil, "q-nospec"},
	{"query decoded name and value", "/q/decoded?a%20b=x%26y", nil, "q-decoded"},
	{"query plus is not a space", "/q/decoded?a+b=x%26y", nil, "<nil>"},
	{"query bad escape kept", "/q/regex?k=1%2", nil, "<nil>"},
	{"query regex", "/q/regex?k=%31%32", nil, "q-regex"},
}

func TestRouteMatch(t *testing.T) {
	tbl := mustCompile(t, matchYAML, Options{})
	for _, tc := range routeMatchCases {
		t.Run(tc.name, func(t *testing.T) {
			h := request("m.example", tc.path, tc.kv...)
			if got := routeName(tbl.Match(h)); got != tc.want {
				t.Errorf("%s %v: got %s, want %s", tc.path, tc.kv, got, tc.want)
			}
		})
	}
}

func TestMatchMethodPost(t *testing.T) {
	tbl := mustCompile(t, matchYAML, Options{})
	h := &protocol.Headers{}
	h.AddString(protocol.Method, "POST")
	h.AddString(protocol.Path, "/h/method")
	h.AddString(protocol.Authority, "x")
	if got := routeName(tbl.Match(h)); got != "h-method" {
		t.Fatalf("got %s", got)
	}
}

func TestMatchFirstRouteWins(t *testing.T) {
	tbl := mustCompile(t, vh(`
  - name: first
    match: {prefix: "/a"}
    route: {cluster: c}
  - name: second
    match: {path: "/a/b"}
    route: {cluster: c}
`), Options{})
	if got := routeName(tbl.Match(request("x", "/a/b"))); got != "first" {
		t.Fatalf("got %s, want first", got)
	}
}

func TestMatchAllocs(t *testing.T) {
	tbl := mustCompile(t, `
virtual_hosts:
- name: other
  domains: ["other.example", "*.wild.example"]
  routes:
  - {match: {prefix: "/"}, route: {cluster: o}}
- name: main
  domains: ["www.example.com"]
  routes:
  - {name: path, match: {path: "/exact"}, route: {cluster: a}}
  - {name: header, match: {prefix: "/h", headers: [{name: x-env, string_match: {exact: prod}}, {name: x-v, exact_match: "1"}]}, route: {cluster: a}}
  - {name: prefix-ci, match: {prefix: "/CI", case_sensitive: false}, route: {cluster: a}}
  - {name: query, match: {prefix: "/q", query_parameters: [{name: k, string_match: {exact: v}}]}, route: {cluster: a}}
  - {name: prefix, match: {prefix: "/"}, route: {cluster: a}}
`, Options{StripAnyHostPort: true})
	cases := []struct {
		name string
		h    *protocol.Headers
		want string
	}{
		{"prefix", request("www.example.com", "/some/path"), "prefix"},
		{"path", request("www.example.com", "/exact?x=1"), "path"},
		{"header", request("www.example.com", "/h", "x-env", "prod", "x-v", "1"), "header"},
		{"case-insensitive prefix", request("www.example.com", "/ci/x"), "prefix-ci"},
		{"query", request("www.example.com", "/q?a=b&k=v"), "query"},
		{"uppercase authority with port", request("WWW.Example.com:8443", "/x"), "prefix"},
		{"wildcard", request("a.wild.example", "/x"), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want != "" {
				if got := routeName(tbl.Match(tc.h)); got != tc.want {
					t.Fatalf("got %s, want %s", got, tc.want)
				}
			}
			if n := testing.AllocsPerRun(100, func() { tbl.Match(tc.h) }); n != 0 {
				t.Fatalf("Match allocates %v times", n)
			}
		})
	}
}

func TestParseInt64(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"-5", -5, true},
		{"+7", 7, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 0, false},
		{"-9223372036854775808", -9223372036854775808, true},
		{"", 0, false},
		{"-", 0, false},
		{" 1", 0, false},
	}
	for _, tc := range cases {
		got, ok := parseInt64([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseInt64(%q) = %d, %v", tc.in, got, ok)
		}
	}
}
