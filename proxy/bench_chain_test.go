package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	_ "github.com/straitproxy/strait/filter/http/fault"
	_ "github.com/straitproxy/strait/filter/http/localratelimit"
	_ "github.com/straitproxy/strait/filter/http/rbac"
)

// chain20 is issue 13's measured chain: an RBAC policy of 20 rules (the
// request matches only the last: every rule is evaluated), the fault
// filter at 0 % and a local rate limit that never limits.
func chain20() []string {
	var pol []string
	for i := 0; i < 19; i++ {
		pol = append(pol, fmt.Sprintf(`"p%02d":{"permissions":[{"and_rules":{"rules":[{"header":{"name":"x-tenant","string_match":{"exact":"t%d"}}},{"url_path":{"path":{"prefix":"/api/v%d/"}}}]}}],"principals":[{"remote_ip":{"address_prefix":"10.%d.0.0","prefix_len":16}}]}`, i, i, i, i))
	}
	pol = append(pol, `"p19":{"permissions":[{"any":true}],"principals":[{"direct_remote_ip":{"address_prefix":"127.0.0.0","prefix_len":8}}]}`)
	return []string{
		`{"@type":"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC","rules":{"action":"ALLOW","policies":{` + strings.Join(pol, ",") + `}}}`,
		`{"@type":"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault","delay":{"fixed_delay":"1s","percentage":{"numerator":0}},"abort":{"http_status":503,"percentage":{"numerator":0}}}`,
		`{"@type":"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit","stat_prefix":"rl","token_bucket":{"max_tokens":1000000000,"tokens_per_fill":1000000000,"fill_interval":"1s"},"filter_enabled":{"default_value":{"numerator":100}},"filter_enforced":{"default_value":{"numerator":100}}}`,
	}
}

// shadow20 is chain20's RBAC policy as shadow rules beside its rules:
// each request's shadow result goes into its dynamic metadata.
func shadow20() []string {
	c := chain20()
	rbac := strings.TrimSuffix(c[0], "}")
	i := strings.Index(rbac, `"rules":`)
	c[0] = rbac + `,"shadow_rules":` + rbac[i+len(`"rules":`):] + "}"
	return c[:1]
}

// BenchmarkStreamChain is BenchmarkStreamDirect with a filter chain:
// "empty" has none, "chain20" the chain above, "shadow20" its RBAC
// filter with shadow rules too; the difference is the chain's cost per
// request on the engine's path.
func BenchmarkStreamChain(b *testing.B) {
	for _, tc := range []struct {
		name    string
		filters []string
	}{{"empty", nil}, {"chain20", chain20()}, {"shadow20", shadow20()}} {
		b.Run(tc.name, func(b *testing.B) {
			var rc routev3.RouteConfiguration
			if err := protojson.Unmarshal([]byte(phaseRoutes), &rc); err != nil {
				b.Fatal(err)
			}
			tb, err := router.Compile(&rc, router.Options{})
			if err != nil {
				b.Fatal(err)
			}
			root := stats.NewStore().Root()
			cfg := &Config{Routes: new(atomic.Pointer[router.Table]), Clusters: noClusters{}, Log: slog.New(slog.DiscardHandler),
				Stats: NewStats(root, "t"), Pool: network.NewPool(1), ServerName: "strait"}
			bc := &filter.BuildContext{Stats: root, StatPrefix: "t"}
			for i, js := range tc.filters {
				var a anypb.Any
				if err := protojson.Unmarshal([]byte(js), &a); err != nil {
					b.Fatal(err)
				}
				f, err := filter.BuildHTTP(bc, &a)
				if err != nil {
					b.Fatal(err)
				}
				cfg.Filters = append(cfg.Filters, HTTPFilter{Name: fmt.Sprint("f", i), Factory: f})
			}
			cfg.Routes.Store(tb)
			cm := &connManager{cfg: cfg, conn: network.NewConn(context.Background(), fakeSocket{})}
			ds := &fakeStream{}
			fields := request("/direct", "user-agent", "bench", "accept", "*/*", "x-tenant", "acme")
			b.ReportAllocs()
			for b.Loop() {
				ds.req.Reset()
				ds.resp.Reset()
				ds.body = ds.body[:0]
				for i := 0; i+1 < len(fields); i += 2 {
					ds.req.AddString(fields[i], fields[i+1])
				}
				s := newStream(cm, ds)
				s.Run()
			}
			if ds.resp.StatusCode() != 200 {
				b.Fatalf("status %d", ds.resp.StatusCode())
			}
		})
	}
}
