package config

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestLegacySyntax: what Envoy's lenient JSON parser accepts decodes to
// the same Bootstrap as the canonical form.
func TestLegacySyntax(t *testing.T) {
	tests := []struct{ name, legacy, canonical string }{
		{"duration as message",
			`{dynamic_resources: {cds_config: {api_config_source: {api_type: REST, refresh_delay: {nanos: 500000000}}}}}`,
			`{dynamic_resources: {cds_config: {api_config_source: {api_type: REST, refresh_delay: 0.5s}}}}`},
		{"duration with seconds",
			`{static_resources: {clusters: [{name: a, connect_timeout: {seconds: 2, nanos: 250000000}}]}}`,
			`{static_resources: {clusters: [{name: a, connect_timeout: 2.25s}]}}`},
		{"negative duration", `{static_resources: {clusters: [{name: a, connect_timeout: {seconds: -1}}]}}`,
			`{static_resources: {clusters: [{name: a, connect_timeout: -1s}]}}`},
		{"one object for a list",
			`{dynamic_resources: {ads_config: {api_type: GRPC, grpc_services: {envoy_grpc: {cluster_name: x}}}}}`,
			`{dynamic_resources: {ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}}}`},
		{"one string for a list", `{static_resources: {clusters: [{name: a}]}, node: {client_features: only}}`,
			`{static_resources: {clusters: [{name: a}]}, node: {client_features: [only]}}`},
		{"wrapper as message", `{static_resources: {clusters: [{name: a, per_connection_buffer_limit_bytes: {value: 1024}}]}}`,
			`{static_resources: {clusters: [{name: a, per_connection_buffer_limit_bytes: 1024}]}}`},
		{"struct as message",
			`{node: {id: node1, metadata: {fields: {team: {string_value: edge}, n: {number_value: 3}, l: {list_value: {values: [{bool_value: true}]}}}}}}`,
			`{node: {id: node1, metadata: {team: edge, n: 3, l: [true]}}}`},
		{"struct with a real fields key", `{node: {id: node1, metadata: {fields: 7}}}`, `{node: {id: node1, metadata: {fields: 7}}}`},
		{"inside an Any",
			`{static_resources: {listeners: [{name: l, filter_chains: {filters: [{name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: c, idle_timeout: {seconds: 9}}}]}}]}}`,
			`{static_resources: {listeners: [{name: l, filter_chains: [{filters: [{name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: c, idle_timeout: 9s}}]}]}]}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.legacy), true)
			if err != nil {
				t.Fatalf("legacy form refused: %v", err)
			}
			want, err := Parse([]byte(tc.canonical), true)
			if err != nil {
				t.Fatalf("canonical form refused: %v", err)
			}
			if g, w := protojson.Format(got), protojson.Format(want); g != w {
				t.Fatalf("legacy decodes to\n%s\nwant\n%s", g, w)
			}
		})
	}
	b, err := Parse([]byte(tests[8].legacy), true)
	if err != nil {
		t.Fatal(err)
	}
	var tp tcpv3.TcpProxy
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
		t.Fatal(err)
	}
	if tp.GetIdleTimeout().AsDuration() != 9*time.Second {
		t.Fatalf("idle_timeout %v", tp.GetIdleTimeout().AsDuration())
	}
	_ = corev3.ApiConfigSource_REST
}

// TestLegacySyntaxErrors: what is wrong after the rewrite is still named
// by its path.
func TestLegacySyntaxErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"duration with a stray key", `{static_resources: {clusters: [{name: a, connect_timeout: {seconds: 1, minutes: 2}}]}}`, "static_resources.clusters[0].connect_timeout"},
		{"unknown field in a wrapped list", `{dynamic_resources: {ads_config: {grpc_services: {envoy_grpcc: {}}}}}`, `dynamic_resources.ads_config.grpc_services[0].envoy_grpcc: unknown field`},
		{"nanos out of range", `{static_resources: {clusters: [{name: a, connect_timeout: {nanos: 1000000000}}]}}`, "static_resources.clusters[0].connect_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
