package proxy

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
)

// BenchmarkStreamDirect runs a request's whole life on a direct-response
// route (no upstream) with an empty filter chain: the engine's own cost
// per request, to compare a change against the build before it
// (benchstat).
func BenchmarkStreamDirect(b *testing.B) {
	var rc routev3.RouteConfiguration
	if err := protojson.Unmarshal([]byte(phaseRoutes), &rc); err != nil {
		b.Fatal(err)
	}
	tb, err := router.Compile(&rc, router.Options{})
	if err != nil {
		b.Fatal(err)
	}
	cfg := &Config{Routes: new(atomic.Pointer[router.Table]), Clusters: noClusters{}, Log: slog.New(slog.DiscardHandler),
		Stats: NewStats(stats.NewStore().Root(), "t"), Pool: network.NewPool(1), ServerName: "strait"}
	cfg.Routes.Store(tb)
	cm := &connManager{cfg: cfg, conn: network.NewConn(context.Background(), fakeSocket{})}
	ds := &fakeStream{}
	fields := request("/direct", "user-agent", "bench", "accept", "*/*")
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
}
