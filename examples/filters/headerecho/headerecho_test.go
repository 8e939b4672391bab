package headerecho

import (
	"strings"
	"testing"

	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"google.golang.org/protobuf/types/known/structpb"
)

func cfg(t *testing.T, m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBuild: good and bad configs, each bad one with its error.
func TestBuild(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  map[string]any
		err  string
	}{
		{"default prefix", map[string]any{"headers": []any{"X-Request-Id"}}, ""},
		{"own prefix", map[string]any{"headers": []any{"a", "b"}, "prefix": "x-saw-"}, ""},
		{"no headers", map[string]any{}, "headers: at least one header"},
		{"bad header", map[string]any{"headers": []any{"a b"}}, `headers[0]: "a b" is not a header name`},
		{"pseudo header", map[string]any{"headers": []any{":path"}}, `headers[0]: ":path" is not a header name`},
		{"bad prefix", map[string]any{"headers": []any{"a"}, "prefix": "x y"}, `prefix: "x y" is not a header name`},
		{"unknown field", map[string]any{"headers": []any{"a"}, "prefixes": "x"}, "prefixes: unknown field"},
		{"wrong type", map[string]any{"headers": "a"}, "headers: wrong type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := build(cfg(t, c.cfg))
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("err %v, want %q", err, c.err)
			}
		})
	}
}

// fakeCallbacks is a stream with an optional per-route config.
type fakeCallbacks struct {
	filter.Callbacks
	perRoute any
}

func (f fakeCallbacks) PerRoute() any { return f.perRoute }

// TestEcho: present headers are echoed under the prefix, absent ones
// are not; a route's own list replaces the filter's.
func TestEcho(t *testing.T) {
	e, _ := build(cfg(t, map[string]any{"headers": []any{"x-request-id", "x-absent"}}))
	f := (&factory{e}).New().(*stream)
	var req, resp protocol.Headers
	req.Set("x-request-id", "abc")
	f.DecodeHeaders(fakeCallbacks{}, &req, true)
	req.Set("x-request-id", "changed later") // the filter kept a copy
	f.EncodeHeaders(fakeCallbacks{}, &resp, true)
	if v, _ := resp.Get("x-echo-x-request-id"); string(v) != "abc" || resp.Has("x-echo-x-absent") {
		t.Fatalf("response %v", &resp)
	}
	route, _ := build(cfg(t, map[string]any{"headers": []any{"x-other"}, "prefix": "x-r-"}))
	f = (&factory{e}).New().(*stream)
	req.Set("x-other", "1")
	f.DecodeHeaders(fakeCallbacks{perRoute: route}, &req, true)
	var resp2 protocol.Headers
	f.EncodeHeaders(fakeCallbacks{}, &resp2, true)
	if v, _ := resp2.Get("x-r-x-other"); string(v) != "1" || resp2.Has("x-echo-x-request-id") {
		t.Fatalf("per route: %v", &resp2)
	}
}
