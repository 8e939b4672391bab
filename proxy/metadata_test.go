package proxy

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
)

// markFilter sets dynamic metadata on requests carrying x-mark.
type markFilter struct{}

func (markFilter) New() filter.StreamFilter { return markFilter{} }
func (markFilter) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	if v, ok := h.Get("x-mark"); ok {
		cb.Info().SetMetadata("ns", "k", string(v))
	}
	return filter.Continue
}

// tagTracer records each span's custom tags.
type tagTracer struct{ tags []string }

func (t *tagTracer) Start(*protocol.Headers, time.Time, bool, bool) Span { return t }
func (t *tagTracer) Child(*protocol.Headers, time.Time) Span             { return t }
func (t *tagTracer) Finish(e *SpanEnd) {
	for _, kv := range e.Tags {
		t.tags = append(t.tags, kv[1])
	}
}

// TestMetadataPerRequest: a pooled stream keeps its dynamic metadata's
// maps for the next request, emptied: a value one request set is not
// seen by the next (the tracer's metadata tag falls back to its
// default).
func TestMetadataPerRequest(t *testing.T) {
	var rc routev3.RouteConfiguration
	if err := protojson.Unmarshal([]byte(phaseRoutes), &rc); err != nil {
		t.Fatal(err)
	}
	tb, err := router.Compile(&rc, router.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr := &tagTracer{}
	cfg := &Config{Routes: new(atomic.Pointer[router.Table]), Clusters: noClusters{}, Log: slog.New(slog.DiscardHandler),
		Stats: NewStats(stats.NewStore().Root(), "t"), Pool: network.NewPool(1), ServerName: "strait",
		Filters: []HTTPFilter{{Name: "mark", Factory: markFilter{}}},
		Tracing: &Tracing{Tracer: tr, Runtime: config.NewRuntime(),
			Tags: []CustomTag{{Name: "mark", MetaNS: "ns", MetaKey: "k", Default: "none"}}}}
	cfg.Routes.Store(tb)
	cm := &connManager{cfg: cfg, conn: network.NewConn(context.Background(), fakeSocket{})}
	for _, mark := range []string{"one", "", "two", ""} {
		ds := &fakeStream{}
		fields := request("/direct")
		if mark != "" {
			fields = append(fields, "x-mark", mark)
		}
		for i := 0; i+1 < len(fields); i += 2 {
			ds.req.AddString(fields[i], fields[i+1])
		}
		newStream(cm, ds).run()
	}
	if got := tr.tags; len(got) != 4 || got[0] != "one" || got[1] != "none" || got[2] != "two" || got[3] != "none" {
		t.Fatalf("tags %q, want one none two none", got)
	}
}
