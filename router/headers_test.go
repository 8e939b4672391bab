package router

import (
	"strings"
	"testing"

	"github.com/straitproxy/strait/protocol"
)

// levelsYAML adds the same three headers at every level, each level
// writing its own name as the value.
func levelsYAML(mostSpecific bool) string {
	add := func(indent, level string) string {
		s := `request_headers_to_add:
- {header: {key: x-over, value: LEVEL}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
- {header: {key: x-append, value: LEVEL}}
- {header: {key: x-absent, value: LEVEL}, append_action: ADD_IF_ABSENT}
response_headers_to_add:
- {header: {key: x-over, value: LEVEL}, append: false}
`
		s = strings.ReplaceAll(s, "LEVEL", level)
		return indent + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+indent) + "\n"
	}
	ms := "false"
	if mostSpecific {
		ms = "true"
	}
	return "most_specific_header_mutations_wins: " + ms + "\n" + add("", "global") + `virtual_hosts:
- name: vh
  domains: ["*"]
` + add("  ", "vhost") + `  routes:
  - match: {prefix: "/"}
    route: {cluster: a}
` + add("    ", "route")
}

func TestHeaderMutationOrder(t *testing.T) {
	cases := []struct {
		name                          string
		mostSpecific                  bool
		over, appended, absent, rOver string
	}{
		{"default: least specific last", false, "global", "route|vhost|global", "route", "global"},
		{"most specific wins", true, "route", "global|vhost|route", "global", "route"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tbl := mustCompile(t, levelsYAML(tc.mostSpecific), Options{})
			req := request("x", "/")
			r := tbl.Match(req)
			r.ApplyRequestHeaders(req, nil)
			for name, want := range map[string]string{"x-over": tc.over, "x-append": tc.appended, "x-absent": tc.absent} {
				if got := all(req, name); got != want {
					t.Errorf("%s = %s, want %s", name, got, want)
				}
			}
			resp := &protocol.Headers{}
			resp.AddString(protocol.Status, "200")
			resp.AddString("x-over", "upstream")
			r.ApplyResponseHeaders(resp, req, nil)
			if got := all(resp, "x-over"); got != tc.rOver {
				t.Errorf("response x-over = %s, want %s", got, tc.rOver)
			}
		})
	}
}

func TestAppendActions(t *testing.T) {
	tbl := mustCompile(t, vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_remove: [x-removed, x-replaced]
    request_headers_to_add:
    - {header: {key: X-Append, value: new}}
    - {header: {key: x-append-new, value: new}, append_action: APPEND_IF_EXISTS_OR_ADD}
    - {header: {key: x-if-absent, value: new}, append_action: ADD_IF_ABSENT}
    - {header: {key: x-if-absent-new, value: new}, append_action: ADD_IF_ABSENT}
    - {header: {key: x-overwrite, value: new}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
    - {header: {key: x-overwrite-new, value: new}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
    - {header: {key: x-if-exists, value: new}, append_action: OVERWRITE_IF_EXISTS}
    - {header: {key: x-if-exists-new, value: new}, append_action: OVERWRITE_IF_EXISTS}
    - {header: {key: x-legacy-false, value: new}, append: false}
    - {header: {key: x-legacy-true, value: new}, append: true}
    - {header: {key: x-replaced, value: new}}
    - {header: {key: x-empty, value: ""}}
    - {header: {key: x-empty-kept, value: ""}, keep_empty_value: true}
    - {header: {key: x-dyn-empty, value: "%REQ(x-missing)%"}}
    - {header: {key: x-dyn-empty-kept, value: "%REQ(x-missing)%"}, keep_empty_value: true}
    - {header: {key: x-raw, raw_value: "cmF3"}}
    - {header: {key: ":authority", value: "rewritten.example"}}
`), Options{})
	req := request("orig.example", "/",
		"x-append", "old", "x-if-absent", "old", "x-overwrite", "old1", "x-overwrite", "old2",
		"x-if-exists", "old", "x-legacy-false", "old", "x-legacy-true", "old",
		"x-removed", "old", "x-replaced", "old")
	tbl.Match(req).ApplyRequestHeaders(req, nil)
	want := map[string]string{
		"x-append":         "old|new",
		"x-append-new":     "new",
		"x-if-absent":      "old",
		"x-if-absent-new":  "new",
		"x-overwrite":      "new",
		"x-overwrite-new":  "new",
		"x-if-exists":      "new",
		"x-if-exists-new":  "<absent>",
		"x-legacy-false":   "new",
		"x-legacy-true":    "old|new",
		"x-removed":        "<absent>",
		"x-replaced":       "new",
		"x-empty":          "<absent>",
		"x-empty-kept":     "",
		"x-dyn-empty":      "<absent>",
		"x-dyn-empty-kept": "",
		"x-raw":            "raw",
		":authority":       "rewritten.example",
	}
	for name, w := range want {
		if got := all(req, name); got != w {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
	// :authority stays among the pseudo-headers, in front.
	first := ""
	req.Visit(func(k, v []byte) bool {
		if k[0] != ':' && first == "" {
			first = string(k)
		}
		if k[0] == ':' && first != "" {
			t.Errorf("pseudo-header %s after regular header %s", k, first)
		}
		return true
	})
}

func TestCommandOperators(t *testing.T) {
	tbl := mustCompile(t, vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
    - {header: {key: x-remote, value: "%DOWNSTREAM_REMOTE_ADDRESS%"}}
    - {header: {key: x-remote-ip, value: "ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}
    - {header: {key: x-local, value: "%DOWNSTREAM_LOCAL_ADDRESS%"}}
    - {header: {key: x-proto, value: "%PROTOCOL%"}}
    - {header: {key: x-req, value: "<%REQ(X-In)%>"}}
    - {header: {key: x-req-alt, value: "%REQ(x-missing?x-in)%"}}
    - {header: {key: x-req-cut, value: "%REQ(x-in):3%"}}
    - {header: {key: x-req-host, value: "%REQ(host)%"}}
    - {header: {key: x-percent, value: "100%% sure"}}
    - {header: {key: x-in, value: "%REQ(x-in)%-again"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
    response_headers_to_add:
    - {header: {key: x-echo, value: "%REQ(x-in)%/%PROTOCOL%"}}
`), Options{})
	cases := []struct {
		name, remote, wantIP string
	}{
		{"ipv4", "10.0.0.1:5555", "ip=10.0.0.1"},
		{"ipv6", "[2001:db8::1]:443", "ip=2001:db8::1"},
		{"no port", "10.0.0.2", "ip=10.0.0.2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := &Vars{RemoteAddr: tc.remote, LocalAddr: "10.1.1.1:80", Protocol: "HTTP/1.1"}
			req := request("host.example", "/", "x-in", "value")
			r := tbl.Match(req)
			r.ApplyRequestHeaders(req, v)
			want := map[string]string{
				"x-remote":    tc.remote,
				"x-remote-ip": tc.wantIP,
				"x-local":     "10.1.1.1:80",
				"x-proto":     "HTTP/1.1",
				"x-req":       "<value>",
				"x-req-alt":   "value",
				"x-req-cut":   "val",
				"x-req-host":  "host.example",
				"x-percent":   "100% sure",
				"x-in":        "value-again",
			}
			for name, w := range want {
				if got := all(req, name); got != w {
					t.Errorf("%s = %q, want %q", name, got, w)
				}
			}
			resp := &protocol.Headers{}
			r.ApplyResponseHeaders(resp, req, v)
			if got := all(resp, "x-echo"); got != "value-again/HTTP/1.1" {
				t.Errorf("x-echo = %q", got)
			}
		})
	}
}

func TestNilVars(t *testing.T) {
	tbl := mustCompile(t, vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
    - {header: {key: x-remote, value: "at %DOWNSTREAM_REMOTE_ADDRESS%"}}
`), Options{})
	req := request("x", "/")
	tbl.Match(req).ApplyRequestHeaders(req, nil)
	if got := all(req, "x-remote"); got != "at " {
		t.Fatalf("x-remote = %q", got)
	}
}

func TestVirtualHostOwnHeaders(t *testing.T) {
	tbl := mustCompile(t, levelsYAML(false), Options{})
	req := request("x", "/")
	vh := tbl.Match(req).VirtualHost
	vh.ApplyRequestHeaders(req, nil)
	if got := all(req, "x-append"); got != "vhost" {
		t.Errorf("x-append = %s, want only the virtual host's", got)
	}
	resp := &protocol.Headers{}
	vh.ApplyResponseHeaders(resp, req, nil)
	if got := all(resp, "x-over"); got != "vhost" {
		t.Errorf("response x-over = %s", got)
	}
}

func TestManyHeaderAdds(t *testing.T) {
	var b strings.Builder
	for i := range 20 {
		b.WriteString("    - {header: {key: x-many, value: \"v" + string(rune('a'+i)) + "\"}}\n")
	}
	tbl := mustCompile(t, vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    request_headers_to_add:
`+b.String()), Options{})
	req := request("x", "/")
	tbl.Match(req).ApplyRequestHeaders(req, nil)
	if got := strings.Count(all(req, "x-many"), "|"); got != 19 {
		t.Fatalf("got %d separators, want 19", got)
	}
}
