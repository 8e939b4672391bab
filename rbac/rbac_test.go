package rbac

import (
	"net/netip"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

func engine(t testing.TB, y string) (*Engine, error) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	var cfg rbacv3.RBAC
	if err := protojson.Unmarshal(js, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.ValidateAll(); err != nil {
		return nil, err
	}
	return Compile(&cfg)
}

// req builds a request: method, path, source, destination, SNI, and
// headers as name, value pairs.
type reqSpec struct {
	method, path string
	src          string
	remote       string
	dst          string
	sni          string
	uris, dns    []string
	subject      string
	l4           bool
	hdr          []string
}

func (s reqSpec) build() *Request {
	r := &Request{SNI: s.sni}
	if !s.l4 {
		h := &protocol.Headers{}
		h.Set(protocol.Method, s.method)
		if s.method == "" {
			h.Set(protocol.Method, "GET")
		}
		p := s.path
		if p == "" {
			p = "/"
		}
		h.Set(protocol.Path, p)
		for i := 0; i+1 < len(s.hdr); i += 2 {
			h.AddString(s.hdr[i], s.hdr[i+1])
		}
		r.Headers, r.Path = h, []byte(p)
	}
	src := s.src
	if src == "" {
		src = "10.0.0.1"
	}
	r.Source = netip.MustParseAddr(src)
	if s.remote != "" {
		r.Remote = netip.MustParseAddr(s.remote)
	}
	dst := s.dst
	if dst == "" {
		dst = "192.168.0.1:8080"
	}
	r.Dest = netip.MustParseAddrPort(dst)
	if s.uris != nil || s.dns != nil || s.subject != "" {
		r.Peer = &network.PeerIdentity{Present: true, URIs: s.uris, DNSNames: s.dns, Subject: s.subject}
	}
	return r
}

// pol is an RBAC config with one policy "p" of the given permission
// and principal (YAML flow mappings).
func pol(action, perm, id string) string {
	return "action: " + action + "\npolicies:\n  p:\n    permissions: [" + perm + "]\n    principals: [" + id + "]\n"
}

// TestPolicies: the policy language against Envoy's documented
// semantics.
func TestPolicies(t *testing.T) {
	cases := []struct {
		name    string
		cfg     string
		req     reqSpec
		allowed bool
	}{
		{"allow any", pol("ALLOW", "{any: true}", "{any: true}"), reqSpec{}, true},
		{"deny any", pol("DENY", "{any: true}", "{any: true}"), reqSpec{}, false},
		{"log any allows", pol("LOG", "{any: true}", "{any: true}"), reqSpec{}, true},
		{"allow without policies denies", "action: ALLOW\n", reqSpec{}, false},
		{"deny without policies allows", "action: DENY\n", reqSpec{}, true},
		{"header exact match", pol("ALLOW", "{header: {name: x-user, string_match: {exact: ann}}}", "{any: true}"), reqSpec{hdr: []string{"x-user", "ann"}}, true},
		{"header exact mismatch", pol("ALLOW", "{header: {name: x-user, string_match: {exact: ann}}}", "{any: true}"), reqSpec{hdr: []string{"x-user", "bob"}}, false},
		{"header absent", pol("ALLOW", "{header: {name: x-user, present_match: true}}", "{any: true}"), reqSpec{}, false},
		{"header invert", pol("ALLOW", "{header: {name: x-user, string_match: {exact: ann}, invert_match: true}}", "{any: true}"), reqSpec{hdr: []string{"x-user", "bob"}}, true},
		{":method header", pol("DENY", "{header: {name: \":method\", string_match: {exact: DELETE}}}", "{any: true}"), reqSpec{method: "DELETE"}, false},
		{":method other", pol("DENY", "{header: {name: \":method\", string_match: {exact: DELETE}}}", "{any: true}"), reqSpec{method: "GET"}, true},
		{"url_path prefix", pol("ALLOW", "{url_path: {path: {prefix: /admin}}}", "{any: true}"), reqSpec{path: "/admin/x?y=1"}, true},
		{"url_path ignores query", pol("ALLOW", "{url_path: {path: {exact: /a}}}", "{any: true}"), reqSpec{path: "/a?b=/c"}, true},
		{"url_path mismatch", pol("ALLOW", "{url_path: {path: {prefix: /admin}}}", "{any: true}"), reqSpec{path: "/public"}, false},
		{"url_path regex", pol("ALLOW", "{url_path: {path: {safe_regex: {regex: \"/v[0-9]+/.*\"}}}}", "{any: true}"), reqSpec{path: "/v2/items"}, true},
		{"destination_port", pol("ALLOW", "{destination_port: 8080}", "{any: true}"), reqSpec{}, true},
		{"destination_port other", pol("ALLOW", "{destination_port: 9090}", "{any: true}"), reqSpec{}, false},
		{"port range in", pol("ALLOW", "{destination_port_range: {start: 8000, end: 8081}}", "{any: true}"), reqSpec{}, true},
		{"port range end excluded", pol("ALLOW", "{destination_port_range: {start: 8000, end: 8080}}", "{any: true}"), reqSpec{}, false},
		{"destination_ip v4", pol("ALLOW", "{destination_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}", "{any: true}"), reqSpec{}, true},
		{"destination_ip v4 out", pol("ALLOW", "{destination_ip: {address_prefix: 192.169.0.0, prefix_len: 16}}", "{any: true}"), reqSpec{}, false},
		{"destination_ip v6", pol("ALLOW", "{destination_ip: {address_prefix: \"2001:db8::\", prefix_len: 32}}", "{any: true}"), reqSpec{dst: "[2001:db8::5]:443"}, true},
		{"destination_ip v6 out", pol("ALLOW", "{destination_ip: {address_prefix: \"2001:db9::\", prefix_len: 32}}", "{any: true}"), reqSpec{dst: "[2001:db8::5]:443"}, false},
		{"v4-mapped v6 source", pol("ALLOW", "{any: true}", "{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}"), reqSpec{src: "::ffff:10.1.2.3"}, true},
		{"direct_remote_ip v4", pol("ALLOW", "{any: true}", "{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}"), reqSpec{}, true},
		{"direct_remote_ip /32", pol("ALLOW", "{any: true}", "{direct_remote_ip: {address_prefix: 10.0.0.2, prefix_len: 32}}"), reqSpec{}, false},
		{"direct_remote_ip without length is exact", pol("ALLOW", "{any: true}", "{direct_remote_ip: {address_prefix: 10.0.0.1}}"), reqSpec{}, true},
		{"source_ip (deprecated)", pol("ALLOW", "{any: true}", "{source_ip: {address_prefix: 10.0.0.0, prefix_len: 24}}"), reqSpec{}, true},
		{"remote_ip uses the client's address", pol("ALLOW", "{any: true}", "{remote_ip: {address_prefix: 203.0.113.0, prefix_len: 24}}"), reqSpec{remote: "203.0.113.9"}, true},
		{"direct_remote_ip ignores x-forwarded-for", pol("ALLOW", "{any: true}", "{direct_remote_ip: {address_prefix: 203.0.113.0, prefix_len: 24}}"), reqSpec{remote: "203.0.113.9"}, false},
		{"remote_ip v6", pol("ALLOW", "{any: true}", "{remote_ip: {address_prefix: \"fd00::\", prefix_len: 8}}"), reqSpec{src: "fd12::1"}, true},
		{"requested_server_name", pol("ALLOW", "{requested_server_name: {suffix: .example.com}}", "{any: true}"), reqSpec{sni: "api.example.com"}, true},
		{"requested_server_name other", pol("ALLOW", "{requested_server_name: {exact: api.example.com}}", "{any: true}"), reqSpec{sni: "web.example.com"}, false},
		{"authenticated any", pol("ALLOW", "{any: true}", "{authenticated: {}}"), reqSpec{uris: []string{"spiffe://x/y"}}, true},
		{"authenticated without certificate", pol("ALLOW", "{any: true}", "{authenticated: {}}"), reqSpec{}, false},
		{"authenticated URI SAN", pol("ALLOW", "{any: true}", "{authenticated: {principal_name: {exact: \"spiffe://cluster.local/ns/a/sa/b\"}}}"), reqSpec{uris: []string{"spiffe://cluster.local/ns/a/sa/b"}}, true},
		{"authenticated DNS SAN", pol("ALLOW", "{any: true}", "{authenticated: {principal_name: {exact: svc.example}}}"), reqSpec{dns: []string{"svc.example"}}, true},
		{"authenticated subject", pol("ALLOW", "{any: true}", "{authenticated: {principal_name: {exact: \"CN=client,O=acme\"}}}"), reqSpec{subject: "CN=client,O=acme"}, true},
		{"authenticated wrong name", pol("ALLOW", "{any: true}", "{authenticated: {principal_name: {prefix: \"spiffe://other\"}}}"), reqSpec{uris: []string{"spiffe://x/y"}}, false},
		{"and_rules all", pol("ALLOW", "{and_rules: {rules: [{destination_port: 8080}, {url_path: {path: {prefix: /a}}}]}}", "{any: true}"), reqSpec{path: "/a"}, true},
		{"and_rules one fails", pol("ALLOW", "{and_rules: {rules: [{destination_port: 8080}, {url_path: {path: {prefix: /a}}}]}}", "{any: true}"), reqSpec{path: "/b"}, false},
		{"or_rules one", pol("ALLOW", "{or_rules: {rules: [{destination_port: 1}, {url_path: {path: {prefix: /a}}}]}}", "{any: true}"), reqSpec{path: "/a"}, true},
		{"not_rule", pol("ALLOW", "{not_rule: {url_path: {path: {prefix: /admin}}}}", "{any: true}"), reqSpec{path: "/x"}, true},
		{"not_rule matching", pol("ALLOW", "{not_rule: {url_path: {path: {prefix: /admin}}}}", "{any: true}"), reqSpec{path: "/admin"}, false},
		{"nested and/or/not", pol("ALLOW", "{and_rules: {rules: [{or_rules: {rules: [{destination_port: 80}, {destination_port: 8080}]}}, {not_rule: {header: {name: x-block, present_match: true}}}]}}", "{any: true}"), reqSpec{}, true},
		{"nested and/or/not blocked", pol("ALLOW", "{and_rules: {rules: [{or_rules: {rules: [{destination_port: 80}, {destination_port: 8080}]}}, {not_rule: {header: {name: x-block, present_match: true}}}]}}", "{any: true}"), reqSpec{hdr: []string{"x-block", "1"}}, false},
		{"and_ids", pol("ALLOW", "{any: true}", "{and_ids: {ids: [{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}, {authenticated: {}}]}}"), reqSpec{uris: []string{"spiffe://a"}}, true},
		{"and_ids missing certificate", pol("ALLOW", "{any: true}", "{and_ids: {ids: [{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}, {authenticated: {}}]}}"), reqSpec{}, false},
		{"or_ids", pol("ALLOW", "{any: true}", "{or_ids: {ids: [{direct_remote_ip: {address_prefix: 11.0.0.0, prefix_len: 8}}, {header: {name: x-key, string_match: {exact: k}}}]}}"), reqSpec{hdr: []string{"x-key", "k"}}, true},
		{"not_id", pol("DENY", "{any: true}", "{not_id: {direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}}"), reqSpec{src: "8.8.8.8"}, false},
		{"not_id inside", pol("DENY", "{any: true}", "{not_id: {direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}}"), reqSpec{}, true},
		{"principal header", pol("ALLOW", "{any: true}", "{header: {name: x-role, string_match: {exact: admin}}}"), reqSpec{hdr: []string{"x-role", "admin"}}, true},
		{"principal url_path", pol("ALLOW", "{any: true}", "{url_path: {path: {prefix: /ok}}}"), reqSpec{path: "/ok/1"}, true},
		{"L4: header rules never match", pol("ALLOW", "{header: {name: x-user, present_match: true}}", "{any: true}"), reqSpec{l4: true}, false},
		{"L4: not of a header rule matches", pol("ALLOW", "{not_rule: {header: {name: x-user, present_match: true}}}", "{any: true}"), reqSpec{l4: true}, true},
		{"L4: url_path never matches", pol("DENY", "{url_path: {path: {prefix: /}}}", "{any: true}"), reqSpec{l4: true}, true},
		{"L4: SNI and source", pol("ALLOW", "{requested_server_name: {exact: db.internal}}", "{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}"), reqSpec{l4: true, sni: "db.internal"}, true},
		{"two policies: second matches", "action: ALLOW\npolicies:\n  a: {permissions: [{destination_port: 1}], principals: [{any: true}]}\n  b: {permissions: [{destination_port: 8080}], principals: [{any: true}]}\n", reqSpec{}, true},
		{"permission and principal both needed", pol("ALLOW", "{destination_port: 8080}", "{direct_remote_ip: {address_prefix: 11.0.0.0, prefix_len: 8}}"), reqSpec{}, false},
	}
	if len(cases) < 40 {
		t.Fatalf("%d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := engine(t, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := e.Allowed(c.req.build()); got != c.allowed {
				t.Fatalf("allowed %v, want %v", got, c.allowed)
			}
		})
	}
}

// TestMatchedPolicy: the first matching policy by name is reported.
func TestMatchedPolicy(t *testing.T) {
	e, err := engine(t, "action: DENY\npolicies:\n  z-any: {permissions: [{any: true}], principals: [{any: true}]}\n  a-port: {permissions: [{destination_port: 8080}], principals: [{any: true}]}\n")
	if err != nil {
		t.Fatal(err)
	}
	if ok, name := e.Allowed(reqSpec{}.build()); ok || name != "a-port" {
		t.Fatalf("%v %q", ok, name)
	}
}

// TestCompileErrors: bad policies are refused with their path.
func TestCompileErrors(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{
		{pol("ALLOW", "{metadata: {filter: f, path: [{key: k}], value: {present_match: true}}}", "{any: true}"), "policies[p].permissions[0]: metadata is not supported yet"},
		{pol("ALLOW", "{any: true}", "{filter_state: {key: k, string_match: {exact: v}}}"), "policies[p].principals[0]: filter_state is not supported yet"},
		{pol("ALLOW", "{destination_ip: {address_prefix: nope, prefix_len: 8}}", "{any: true}"), `destination_ip.address_prefix: "nope" is not an IP address`},
		{pol("ALLOW", "{destination_ip: {address_prefix: 10.0.0.0, prefix_len: 40}}", "{any: true}"), "destination_ip.prefix_len: 40 is longer than the address"},
		{pol("ALLOW", "{destination_port_range: {start: 9000, end: 8000}}", "{any: true}"), "destination_port_range: [9000, 8000) is not a port range"},
		{pol("ALLOW", "{url_path: {path: {safe_regex: {regex: \"(\"}}}}", "{any: true}"), "url_path.path"},
		{"action: ALLOW\npolicies:\n  p: {permissions: [{any: true}], principals: [{any: true}], condition: {const_expr: {bool_value: true}}}\n", "policies[p].condition: CEL conditions are not supported yet"},
	} {
		_, err := engine(t, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// BenchmarkAllowed: a 20-rule policy set evaluated against a request;
// no allocation per evaluation.
func BenchmarkAllowed(b *testing.B) {
	y := "action: DENY\npolicies:\n"
	for i := 0; i < 18; i++ {
		y += "  p" + string(rune('a'+i)) + ": {permissions: [{url_path: {path: {prefix: /blocked" + string(rune('a'+i)) + "}}}], principals: [{any: true}]}\n"
	}
	y += "  s: {permissions: [{header: {name: x-bad, present_match: true}}], principals: [{direct_remote_ip: {address_prefix: 172.16.0.0, prefix_len: 12}}]}\n"
	y += "  t: {permissions: [{any: true}], principals: [{authenticated: {principal_name: {exact: \"spiffe://evil\"}}}]}\n"
	e, err := engine(b, y)
	if err != nil {
		b.Fatal(err)
	}
	r := reqSpec{path: "/api/items?x=1", uris: []string{"spiffe://good"}, hdr: []string{"x-user", "ann"}}.build()
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := e.Allowed(r); !ok {
			b.Fatal("denied")
		}
	}
}
