package router

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/straitproxy/strait/protocol"
)

// parseRC decodes a RouteConfiguration written in YAML, strictly.
func parseRC(t testing.TB, y string) *routev3.RouteConfiguration {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	rc := &routev3.RouteConfiguration{}
	if err := protojson.Unmarshal(j, rc); err != nil {
		t.Fatalf("protojson: %v", err)
	}
	return rc
}

func mustCompile(t testing.TB, y string, opt Options) *Table {
	t.Helper()
	tbl, err := Compile(parseRC(t, y), opt)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tbl
}

// request builds request headers; kv are further name, value pairs.
func request(authority, path string, kv ...string) *protocol.Headers {
	h := &protocol.Headers{}
	h.AddString(protocol.Method, "GET")
	h.AddString(protocol.Scheme, "http")
	h.AddString(protocol.Path, path)
	if authority != "" {
		h.AddString(protocol.Authority, authority)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.AddString(kv[i], kv[i+1])
	}
	return h
}

// routeName returns the matched route's name, or "<nil>".
func routeName(r *Route) string {
	if r == nil {
		return "<nil>"
	}
	return r.Name
}

// all returns every value of name joined with "|", or "<absent>".
func all(h *protocol.Headers, name string) string {
	var vals []string
	h.Visit(func(k, v []byte) bool {
		if string(k) == name {
			vals = append(vals, string(v))
		}
		return true
	})
	if vals == nil {
		return "<absent>"
	}
	return strings.Join(vals, "|")
}
