package router

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// vh wraps routes (YAML, indented by 4) in a one-host configuration.
func vh(routes string) string {
	return `
name: rc
virtual_hosts:
- name: one
  domains: ["*"]
  routes:
` + routes
}

func TestCompileGood(t *testing.T) {
	cases := []struct {
		name string
		yaml string
	}{
		{"minimal", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
`)},
		{"ignored decorations", `
name: rc
metadata: {filter_metadata: {x: {k: v}}}
virtual_hosts:
- name: one
  domains: ["*"]
  metadata: {filter_metadata: {x: {k: v}}}
  routes:
  - match: {safe_regex: {google_re2: {}, regex: "/a.*"}}
    decorator: {operation: op}
    stat_prefix: sp
    route: {cluster: a}
`},
		{"prefix_rewrite with safe_regex", vh(`
  - match: {safe_regex: {regex: "/a/.*"}}
    route: {cluster: a, prefix_rewrite: "/b"}
`)},
		{"prefix_rewrite with path", vh(`
  - match: {path: "/a"}
    route: {cluster: a, prefix_rewrite: "/b"}
`)},
		{"every supported matcher", vh(`
  - match:
      path_separated_prefix: "/api"
      case_sensitive: false
      headers:
      - {name: x-a, exact_match: v}
      - {name: x-b, safe_regex_match: {regex: "[0-9]+"}}
      - {name: x-c, range_match: {start: 1, end: 5}}
      - {name: x-d, present_match: true, invert_match: true}
      - {name: x-e, prefix_match: p}
      - {name: x-f, suffix_match: s}
      - {name: x-g, contains_match: c}
      - {name: x-h, string_match: {exact: v, ignore_case: true}, treat_missing_header_as_empty: true}
      query_parameters:
      - {name: q, string_match: {prefix: v}}
      - {name: r, present_match: true}
    route: {cluster: a}
`)},
		{"retry with every condition", vh(`
  - match: {prefix: "/"}
    route:
      cluster: a
      retry_policy:
        retry_on: "5xx, gateway-error,connect-failure,reset,retriable-status-codes,refused-stream,retriable-4xx,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"
`)},
		{"command operators", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
    - header: {key: x-v, value: "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS% %PROTOCOL% %REQ(x-a)% %REQ(x-a?x-b):3% 100%%"}
`)},
		{"authority may be set", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
    - header: {key: ":authority", value: "b.example"}
`)},
		{"same domain in two forms", `
virtual_hosts:
- name: one
  domains: ["a.com", "*.a.com", "a.com.*", "a.com:80"]
- name: two
  domains: ["b.com"]
`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Compile(parseRC(t, tc.yaml), Options{}); err != nil {
				t.Fatalf("Compile: %v", err)
			}
		})
	}
}

// badConfigs are configurations Compile must refuse, each with a part of the error it must give.
var badConfigs = []struct {
	name string
	yaml string
	opt  Options
	want string
}{
	{"proto validation", `
virtual_hosts:
- name: one
`, Options{}, "invalid route configuration: "},
	{"bad regex", vh(`
  - match: {safe_regex: {regex: "/a("}}
    route: {cluster: a}
`), Options{}, "virtual_hosts[0].routes[0].match.safe_regex: error parsing regexp: missing closing )"},
	{"bad header regex", vh(`
  - match: {prefix: "/", headers: [{name: x, string_match: {safe_regex: {regex: "*"}}}]}
    route: {cluster: a}
`), Options{}, "virtual_hosts[0].routes[0].match.headers[0].string_match.safe_regex: error parsing regexp"},
	{"unknown retry_on", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, retry_policy: {retry_on: "5xx,bogus, nope"}}
`), Options{}, `virtual_hosts[0].routes[0].route.retry_policy.retry_on: unknown retry condition "bogus", "nope"`},
	{"unsupported retry_on", `
virtual_hosts:
- name: one
  domains: ["*"]
  retry_policy: {retry_on: "envoy-ratelimited"}
`, Options{}, `virtual_hosts[0].retry_policy.retry_on: retry condition "envoy-ratelimited": not supported yet`},
	{"back-off max below base", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, retry_policy: {retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}
`), Options{}, "route.retry_policy.retry_back_off.max_interval: must be at least base_interval 1s, got 500ms"},
	{"duplicate domain", `
virtual_hosts:
- name: one
  domains: ["a.com"]
- name: two
  domains: ["b.com", "A.COM"]
`, Options{}, `virtual_hosts[1].domains[1]: duplicate domain "A.COM", already in virtual host "one"`},
	{"duplicate wildcard domain", `
virtual_hosts:
- name: one
  domains: ["*.a.com"]
- name: two
  domains: ["*.a.com"]
`, Options{}, `virtual_hosts[1].domains[0]: duplicate domain "*.a.com"`},
	{"two catch-alls", `
virtual_hosts:
- name: one
  domains: ["*"]
- name: two
  domains: ["*"]
`, Options{}, `virtual_hosts[1].domains[0]: duplicate domain "*", already in virtual host "one"`},
	{"duplicate virtual host name", `
virtual_hosts:
- name: one
  domains: ["a.com"]
- name: one
  domains: ["b.com"]
`, Options{}, `virtual_hosts[1].name: duplicate virtual host name "one"`},
	{"wildcard in the middle", `
virtual_hosts:
- name: one
  domains: ["a.*.com"]
`, Options{}, `virtual_hosts[0].domains[0]: wildcard "*" must be the first or last character`},
	{"unknown command operator", `
virtual_hosts:
- name: one
  domains: ["*"]
request_headers_to_add:
- header: {key: x-t, value: "at %START_TIME%"}
`, Options{}, "request_headers_to_add[0].header.value: at offset 3: unknown command operator %START_TIME%"},
	{"unknown operator with argument", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    response_headers_to_add:
    - header: {key: x-t, value: "%UPSTREAM_METADATA(a)%"}
`), Options{}, "routes[0].response_headers_to_add[0].header.value: at offset 0: unknown command operator %UPSTREAM_METADATA(a)%"},
	{"lone percent", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
    - header: {key: x-t, value: "100%"}
`), Options{}, `starts no command operator`},
	{"unclosed operator", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
    - header: {key: x-t, value: "%PROTOCOL"}
`), Options{}, `command operator "%PROTOCOL" is not closed`},
	{"REQ without name", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
    - header: {key: x-t, value: "%REQ()%"}
`), Options{}, `command operator %REQ()% needs a header name`},
	{"pseudo-header mutation", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
    - header: {key: ":path", value: "/x"}
`), Options{}, `routes[0].request_headers_to_add[0].header.key: pseudo-header ":path" may not be modified`},
	{"host mutation", `
virtual_hosts:
- name: one
  domains: ["*"]
  request_headers_to_remove: ["Host"]
`, Options{}, `virtual_hosts[0].request_headers_to_remove[0]: header "host" may not be modified`},
	{"authority removal", `
virtual_hosts:
- name: one
  domains: ["*"]
  request_headers_to_remove: [":authority"]
`, Options{}, `pseudo-header ":authority" may not be modified`},
	{"authority in responses", `
virtual_hosts:
- name: one
  domains: ["*"]
response_headers_to_add:
- header: {key: ":authority", value: x}
`, Options{}, `response_headers_to_add[0].header.key: pseudo-header ":authority"`},
	{"append and append_action", `
virtual_hosts:
- name: one
  domains: ["*"]
request_headers_to_add:
- header: {key: x, value: "v"}
  append: true
  append_action: ADD_IF_ABSENT
`, Options{}, "request_headers_to_add[0]: append and append_action may not both be set"},
	{"value and raw_value", `
virtual_hosts:
- name: one
  domains: ["*"]
request_headers_to_add:
- header: {key: x, value: "v", raw_value: eg==}
`, Options{}, "request_headers_to_add[0].header: only one of value and raw_value"},
	{"grpc match", vh(`
  - match: {prefix: "/", grpc: {}}
    route: {cluster: a}
`), Options{}, "virtual_hosts[0].routes[0].match.grpc: not supported yet"},
	{"dynamic_metadata", vh(`
  - match: {prefix: "/", dynamic_metadata: [{filter: f, path: [{key: k}], value: {present_match: true}}]}
    route: {cluster: a}
`), Options{}, "routes[0].match.dynamic_metadata: not supported yet"},
	{"tls_context", vh(`
  - match: {prefix: "/", tls_context: {presented: true}}
    route: {cluster: a}
`), Options{}, "routes[0].match.tls_context: not supported yet"},
	{"connect_matcher", vh(`
  - match: {connect_matcher: {}}
    route: {cluster: a}
`), Options{}, "routes[0].match.connect_matcher: not supported yet"},
	{"filter_state", vh(`
  - match: {prefix: "/", filter_state: [{key: k, string_match: {exact: v}}]}
    route: {cluster: a}
`), Options{}, "routes[0].match.filter_state: not supported yet"},
	{"cookies", vh(`
  - match: {prefix: "/", cookies: [{name: c, string_match: {exact: v}}]}
    route: {cluster: a}
`), Options{}, "routes[0].match.cookies: not supported yet"},
	{"string matcher custom", vh(`
  - match: {prefix: "/", headers: [{name: x, string_match: {custom: {name: c, typed_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: s}}}}]}
    route: {cluster: a}
`), Options{}, "routes[0].match.headers[0].string_match.custom: not supported yet"},
	{"cluster_header", vh(`
  - match: {prefix: "/"}
    route: {cluster_header: x-cluster}
`), Options{}, "routes[0].route.cluster_header: not supported yet"},
	{"cluster_specifier_plugin", vh(`
  - match: {prefix: "/"}
    route: {cluster_specifier_plugin: p}
`), Options{}, "routes[0].route.cluster_specifier_plugin: not supported yet"},
	{"inline_cluster_specifier_plugin", vh(`
  - match: {prefix: "/"}
    route: {inline_cluster_specifier_plugin: {extension: {name: p, typed_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: s}}}}
`), Options{}, "routes[0].route.inline_cluster_specifier_plugin: not supported yet"},
	{"mirror with both cluster specifiers", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, request_mirror_policies: [{cluster: m, cluster_header: x-m}]}
`), Options{}, "routes[0].route.request_mirror_policies[0]: only one of cluster and cluster_header may be set"},
	{"mirror without a cluster", `
request_mirror_policies: [{runtime_fraction: {default_value: {numerator: 5}}}]
virtual_hosts:
- name: one
  domains: ["*"]
`, Options{}, "request_mirror_policies[0]: one of cluster and cluster_header is required"},
	{"mirror cluster_header not a header", `
virtual_hosts:
- name: one
  domains: ["*"]
  request_mirror_policies: [{cluster_header: "x m"}]
`, Options{}, `virtual_hosts[0].request_mirror_policies[0].cluster_header: "x m" is not a header name`},
	{"mirror header mutations", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, request_mirror_policies: [{cluster: m, request_headers_mutations: [{remove: x}]}]}
`), Options{}, "routes[0].route.request_mirror_policies[0].request_headers_mutations: not supported yet"},
	{"hash_policy", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, hash_policy: [{header: {header_name: x}}]}
`), Options{}, "routes[0].route.hash_policy: not supported yet"},
	{"weighted cluster header mutation", vh(`
  - match: {prefix: "/"}
    route: {weighted_clusters: {clusters: [{name: a, weight: 1, request_headers_to_remove: [x]}]}}
`), Options{}, "route.weighted_clusters.clusters[0].request_headers_to_remove: not supported yet"},
	{"filter_action", vh(`
  - match: {prefix: "/"}
    filter_action: {}
`), Options{}, "routes[0].filter_action: not supported yet"},
	{"environment_variable body", vh(`
  - match: {prefix: "/"}
    direct_response: {status: 200, body: {environment_variable: HOME}}
`), Options{}, "direct_response.body.environment_variable: not supported yet"},
	{"weights add up to zero", vh(`
  - match: {prefix: "/"}
    route: {weighted_clusters: {clusters: [{name: a, weight: 0}, {name: b}]}}
`), Options{}, "route.weighted_clusters.clusters: the weights add up to 0"},
	{"total_weight mismatch", vh(`
  - match: {prefix: "/"}
    route: {weighted_clusters: {total_weight: 10, clusters: [{name: a, weight: 3}, {name: b, weight: 3}]}}
`), Options{}, "route.weighted_clusters.total_weight: is 10 but the weights add up to 6"},
	{"weighted cluster without name", vh(`
  - match: {prefix: "/"}
    route: {weighted_clusters: {clusters: [{weight: 3}]}}
`), Options{}, "route.weighted_clusters.clusters[0].name: must not be empty"},
	{"prefix and regex rewrite", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, prefix_rewrite: /b, regex_rewrite: {pattern: {regex: a}, substitution: b}}
`), Options{}, "routes[0].route: prefix_rewrite and regex_rewrite are exclusive"},
	{"regex rewrite missing group", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, regex_rewrite: {pattern: {regex: "/(a)"}, substitution: '\2'}}
`), Options{}, `route.regex_rewrite.substitution: "\\2" refers to group \2 but the pattern has 1 capturing groups`},
	{"regex rewrite bad escape", vh(`
  - match: {prefix: "/"}
    redirect: {regex_rewrite: {pattern: {regex: "/a"}, substitution: '\n'}}
`), Options{}, `redirect.regex_rewrite.substitution: invalid escape "\n"`},
	{"regex rewrite bad pattern", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, regex_rewrite: {pattern: {regex: "a["}, substitution: b}}
`), Options{}, "route.regex_rewrite.pattern.regex: error parsing regexp"},
	{"body too large", `
max_direct_response_body_size_bytes: 4
virtual_hosts:
- name: one
  domains: ["*"]
  routes:
  - match: {prefix: "/"}
    direct_response: {status: 200, body: {inline_string: "hello"}}
`, Options{}, "direct_response.body: body is 5 bytes, larger than max_direct_response_body_size_bytes (4)"},
	{"body file missing", vh(`
  - match: {prefix: "/"}
    direct_response: {status: 200, body: {filename: /nonexistent/strait/body}}
`), Options{}, "routes[0].direct_response.body.filename: open /nonexistent/strait/body"},
	{"negative timeout", vh(`
  - match: {prefix: "/"}
    route: {cluster: a, timeout: -1s}
`), Options{}, "routes[0].route.timeout: must not be negative, got -1s"},
	{"both strip modes", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
`), Options{StripAnyHostPort: true, StripMatchingHostPort: true, ListenerPort: 80}, "strip_any_host_port and strip_matching_host_port are exclusive"},
	{"strip matching without port", vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
`), Options{StripMatchingHostPort: true}, "strip_matching_host_port needs a listener port, got 0"},
}

func TestCompileBad(t *testing.T) {
	for _, tc := range badConfigs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(parseRC(t, tc.yaml), tc.opt)
			if err == nil {
				t.Fatalf("Compile succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestCompileNil(t *testing.T) {
	if _, err := Compile(nil, Options{}); err == nil {
		t.Fatal("Compile(nil) succeeded")
	}
}

func TestBodyFromFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "body.txt")
	if err := os.WriteFile(name, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	tbl := mustCompile(t, vh(`
  - name: file
    match: {prefix: "/file"}
    direct_response: {status: 503, body: {filename: "`+name+`"}}
  - name: bytes
    match: {prefix: "/bytes"}
    direct_response: {status: 200, body: {inline_bytes: "aGk="}}
  - name: empty
    match: {prefix: "/"}
    direct_response: {status: 204}
`), Options{})
	for _, tc := range []struct {
		path, body string
		status     int
		nilBody    bool
	}{
		{"/file", "from a file", 503, false},
		{"/bytes", "hi", 200, false},
		{"/other", "", 204, true},
	} {
		d := tbl.Match(request("x", tc.path)).DirectResponse
		if d.Status != tc.status || string(d.Body) != tc.body || (d.Body == nil) != tc.nilBody {
			t.Errorf("%s: got %d %q (nil %v)", tc.path, d.Status, d.Body, d.Body == nil)
		}
	}
}

func TestBodyFileTooLarge(t *testing.T) {
	name := filepath.Join(t.TempDir(), "big.txt")
	if err := os.WriteFile(name, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Compile(parseRC(t, "max_direct_response_body_size_bytes: 4\n"+vh(`
  - match: {prefix: "/"}
    direct_response: {status: 200, body: {filename: "`+name+`"}}
`)), Options{})
	want := "routes[0].direct_response.body.filename: " + name + " is larger than max_direct_response_body_size_bytes (4)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestClusterNamesAndName(t *testing.T) {
	tbl := mustCompile(t, `
name: my-routes
validate_clusters: false
virtual_hosts:
- name: one
  domains: ["*"]
  routes:
  - match: {prefix: "/a"}
    route: {cluster: zeta}
  - match: {prefix: "/b"}
    route: {weighted_clusters: {clusters: [{name: alpha, weight: 1}, {name: zeta, weight: 1}]}}
  - match: {prefix: "/c"}
    redirect: {host_redirect: x}
`, Options{})
	if tbl.Name() != "my-routes" {
		t.Errorf("Name = %q", tbl.Name())
	}
	if got := strings.Join(tbl.ClusterNames(), ","); got != "alpha,zeta" {
		t.Errorf("ClusterNames = %s", got)
	}
	if v, set := tbl.ValidateClusters(); v || !set {
		t.Errorf("ValidateClusters = %v, %v", v, set)
	}
}

// TestSupportedFieldsExist guards the allow-list against typos and renames.
func TestSupportedFieldsExist(t *testing.T) {
	for msg, use := range supported {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(msg)
		if err != nil {
			t.Errorf("%s: %v", msg, err)
			continue
		}
		md := d.(protoreflect.MessageDescriptor)
		for f := range use {
			if md.Fields().ByName(f) == nil {
				t.Errorf("%s has no field %s", msg, f)
			}
		}
	}
}
