package router

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Per-route config types of two made-up filters: StringValue (no rules)
// and Percent (value 0..100), standing for a real filter's.
func init() {
	config.Register(config.Extension{Kind: config.HTTPPerRoute, Name: "test.strings", TypeURL: "type.googleapis.com/google.protobuf.StringValue"})
	config.Register(config.Extension{Kind: config.HTTPPerRoute, Name: "test.percent", TypeURL: "type.googleapis.com/envoy.type.v3.Percent"})
	// A filter whose per-route builder makes its own value.
	config.Register(config.Extension{Kind: config.HTTPPerRoute, Name: "test.built", TypeURL: "type.googleapis.com/google.protobuf.UInt32Value",
		Factory: func(m proto.Message) (any, error) {
			v := m.(*wrapperspb.UInt32Value).GetValue()
			if v == 0 {
				return nil, errors.New("zero")
			}
			return fmt.Sprintf("built %d", v), nil
		}})
}

func TestTypedPerFilterConfig(t *testing.T) {
	route := func(tpfc string) string {
		return vh(`
  - match: {prefix: "/"}
    route: {cluster: a}
    typed_per_filter_config:
` + tpfc)
	}
	tests := []struct{ name, tpfc, err string }{
		{"known type", `      f: {"@type": type.googleapis.com/envoy.type.v3.Percent, value: 50}`, ""},
		{"fails its validation", `      f: {"@type": type.googleapis.com/envoy.type.v3.Percent, value: 150}`,
			"virtual_hosts[0].routes[0].typed_per_filter_config[f].value: value must be inside range [0, 100]"},
		{"no filter takes it", `      f: {"@type": type.googleapis.com/google.protobuf.Int32Value, value: 1}`,
			`virtual_hosts[0].routes[0].typed_per_filter_config[f]: no compiled-in HTTP filter takes per-route config of type "type.googleapis.com/google.protobuf.Int32Value"`},
		{"optional and unknown", `      f: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, is_optional: true, config: {"@type": type.googleapis.com/google.protobuf.Int32Value, value: 1}}`, ""},
		{"wrapped and known", `      f: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, config: {"@type": type.googleapis.com/envoy.type.v3.Percent, value: 7}}`, ""},
		{"wrapped, not optional, unknown", `      f: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, config: {"@type": type.googleapis.com/google.protobuf.Int32Value, value: 1}}`,
			"typed_per_filter_config[f].config: no compiled-in HTTP filter"},
		{"disabled", `      f: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}`, ""},
		{"enabled", `      f: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig}`, ""},
		{"built", `      b: {"@type": type.googleapis.com/google.protobuf.UInt32Value, value: 3}`, ""},
		{"build fails", `      b: {"@type": type.googleapis.com/google.protobuf.UInt32Value, value: 0}`, "typed_per_filter_config[b]: zero"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tbl, err := Compile(parseRC(t, route(tc.tpfc)), Options{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := tbl.Match(request("x", "/"))
			switch tc.name {
			case "disabled":
				if r.PerFilterConfig["f"] != FilterDisabled {
					t.Fatalf("PerFilterConfig = %v", r.PerFilterConfig)
				}
			case "enabled":
				if r.PerFilterConfig["f"] != FilterEnabled {
					t.Fatalf("PerFilterConfig = %v", r.PerFilterConfig)
				}
			case "built":
				if r.PerFilterConfig["b"] != "built 3" {
					t.Fatalf("PerFilterConfig = %v", r.PerFilterConfig)
				}
			case "optional and unknown":
				if len(r.PerFilterConfig) != 0 {
					t.Fatalf("optional unknown config kept: %v", r.PerFilterConfig)
				}
			default:
				if p, ok := r.PerFilterConfig["f"].(*typev3.Percent); !ok || p.GetValue() == 0 {
					t.Fatalf("PerFilterConfig = %v", r.PerFilterConfig)
				}
			}
		})
	}
}
