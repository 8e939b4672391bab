package tcpproxy

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/upstream"
	"google.golang.org/protobuf/encoding/protojson"
)

type clusters map[string]bool

func (c clusters) Known(name string) bool { return c[name] }

func (c clusters) Dynamic() bool { return false }

func (c clusters) Get(name string) (*upstream.Cluster, bool) {
	if c[name] {
		return &upstream.Cluster{Name: name}, true
	}
	return nil, false
}

func TestBuild(t *testing.T) {
	tests := []struct{ name, js, want string }{
		{"cluster", `{"stat_prefix":"s","cluster":"a"}`, ""},
		{"weighted", `{"stat_prefix":"s","weighted_clusters":{"clusters":[{"name":"a","weight":1},{"name":"b","weight":3}]}}`, ""},
		{"missing cluster", `{"stat_prefix":"s","cluster":"zzz"}`, `cluster: cluster "zzz" does not exist`},
		{"missing weighted", `{"stat_prefix":"s","weighted_clusters":{"clusters":[{"name":"a","weight":1},{"name":"q","weight":1}]}}`, `weighted_clusters.clusters[1].name: cluster "q" does not exist`},
		{"tunneling", `{"stat_prefix":"s","cluster":"a","tunneling_config":{"hostname":"h"}}`, "tunneling_config: not supported yet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m tcpv3.TcpProxy
			if err := protojson.Unmarshal([]byte(tc.js), &m); err != nil {
				t.Fatal(err)
			}
			bc := &filter.BuildContext{Clusters: clusters{"a": true, "b": true}, Stats: stats.NewStore().Root(),
				Pool: network.NewPool(4), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			c, err := build(bc, &m)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "weighted" {
				got := map[string]int{}
				for r := uint64(0); r < 400; r++ {
					got[c.pickCluster(r)]++
				}
				if got["a"] != 100 || got["b"] != 300 {
					t.Fatalf("weighted picks %v", got)
				}
			}
		})
	}
}
