package upstream

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"

	_ "github.com/straitproxy/strait/protocol/http2"
)

// TestDeprecatedProtocolFields: the deprecated HTTP protocol fields of a
// cluster act as their typed_extension_protocol_options replacement.
func TestDeprecatedProtocolFields(t *testing.T) {
	tests := []struct {
		name, js string
		check    func(*Cluster) bool
		err      string
	}{
		{"http2_protocol_options", `"http2_protocol_options":{"max_concurrent_streams":7}`,
			func(c *Cluster) bool { return c.Protocol == "http2" && c.Mux.HTTP2.MaxConcurrentStreams == 7 }, ""},
		{"http_protocol_options", `"http_protocol_options":{}`, func(c *Cluster) bool { return c.Protocol == "http1" }, ""},
		{"common_http_protocol_options", `"common_http_protocol_options":{"idle_timeout":"7s"}`,
			func(c *Cluster) bool { return c.IdleTimeout == 7*time.Second }, ""},
		{"use downstream protocol", `"protocol_selection":"USE_DOWNSTREAM_PROTOCOL","http2_protocol_options":{}`,
			func(c *Cluster) bool { return c.Downstream && c.Protocol == "http1" && c.H2 != nil }, ""},
		{"both forms", `"http2_protocol_options":{},"typed_extension_protocol_options":{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
			{"@type":"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions","explicit_http_config":{"http2_protocol_options":{}}}}`,
			nil, "cannot be set with the deprecated"},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cl clusterv3.Cluster
			js := `{"name":"c","type":"STATIC","connect_timeout":"1s",` + tc.js + `}`
			if err := protojson.Unmarshal([]byte(js), &cl); err != nil {
				t.Fatal(err)
			}
			orig := protojson.Format(&cl)
			c, err := BuildCluster(&cl, stats.NewStore().Root(), log)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("built %+v", c)
			}
			if protojson.Format(&cl) != orig {
				t.Fatal("the config was modified")
			}
		})
	}
}
