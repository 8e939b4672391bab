package router

import (
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestScopeKeyBuilder(t *testing.T) {
	tests := []struct {
		name, builder, header, key string
		ok                         bool
	}{
		{"element by key", `{"name":"x","element_separator":";","element":{"key":"t","separator":"="}}`, "a=1; t=red", "red", true},
		{"element missing", `{"name":"x","element_separator":";","element":{"key":"t","separator":"="}}`, "a=1", "", false},
		{"index", `{"name":"x","element_separator":",","index":1}`, "a,b,c", "b", true},
		{"index past the end", `{"name":"x","element_separator":",","index":5}`, "a,b", "", false},
		{"whole value", `{"name":"x","index":0}`, "whole", "whole", true},
		{"no header", `{"name":"y","index":0}`, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b hcmv3.ScopedRoutes_ScopeKeyBuilder
			js := `{"fragments":[{"header_value_extractor":` + tc.builder + `}]}`
			if err := protojson.Unmarshal([]byte(js), &b); err != nil {
				t.Fatal(err)
			}
			kb, err := CompileKeyBuilder(&b)
			if err != nil {
				t.Fatal(err)
			}
			h := request("x", "/")
			if tc.header != "" {
				h.AddString("x", tc.header)
			}
			k, ok := kb.Key(h)
			if ok != tc.ok || ok && k != tc.key+"\x00" {
				t.Fatalf("key %q %v, want %q %v", k, ok, tc.key, tc.ok)
			}
		})
	}
	var bad hcmv3.ScopedRoutes_ScopeKeyBuilder
	protojson.Unmarshal([]byte(`{"fragments":[{"header_value_extractor":{"name":"x","index":2}}]}`), &bad)
	if _, err := CompileKeyBuilder(&bad); err == nil {
		t.Fatal("an index other than 0 without a separator was accepted")
	}
}
