package upstream

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
)

func buildJSON(t *testing.T, js string) (*Cluster, error) {
	t.Helper()
	var cl clusterv3.Cluster
	if err := protojson.Unmarshal([]byte(js), &cl); err != nil {
		t.Fatal(err)
	}
	c, err := BuildCluster(&cl, stats.NewStore().Root(), slog.Default())
	if err == nil {
		t.Cleanup(c.Stop)
	}
	return c, err
}

func tcpAddr(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(mustAddrPort(s)) }

// TestOriginalDst: each request goes to its connection's original
// destination, or the header's with use_http_header; one host per
// address, kept while used and swept after an unused cleanup_interval.
func TestOriginalDst(t *testing.T) {
	c, err := buildJSON(t, `{"name":"pass","type":"ORIGINAL_DST","lb_policy":"CLUSTER_PROVIDED","cleanup_interval":"0.1s",
		"original_dst_lb_config":{"use_http_header":true}}`)
	if err != nil {
		t.Fatal(err)
	}
	if !c.HasEndpoints() {
		t.Fatal("an ORIGINAL_DST cluster waits for endpoints")
	}
	a := c.Pick(&PickHint{Local: tcpAddr("10.1.2.3:8080")})
	if a == nil || a.Addr != "10.1.2.3:8080" {
		t.Fatalf("picked %v, want 10.1.2.3:8080", a)
	}
	if b := c.Pick(&PickHint{Local: tcpAddr("10.1.2.3:8080")}); b != a {
		t.Fatal("the same destination got a second host")
	}
	var h protocol.Headers
	h.Set("x-envoy-original-dst-host", "[::1]:9000")
	if v6 := c.Pick(&PickHint{Local: tcpAddr("10.1.2.3:8080"), Headers: &h}); v6 == nil || v6.Addr != "[::1]:9000" {
		t.Fatalf("the header's destination: %v", v6)
	}
	if n := len(c.Hosts().All); n != 2 {
		t.Fatalf("%d hosts, want 2", n)
	}
	h.Set("x-envoy-original-dst-host", "backend.example:80")
	if bad := c.Pick(&PickHint{Headers: &h}); bad != nil || c.statsScope.Counter("original_dst_host_invalid").Value() != 1 {
		t.Fatalf("an unreadable header picked %v", bad)
	}
	// An unreadable header falls back to the restored destination.
	if got := c.Pick(&PickHint{Headers: &h, Local: tcpAddr("10.1.2.3:8080")}); got != a || c.statsScope.Counter("original_dst_host_invalid").Value() != 2 {
		t.Fatalf("an unreadable header with a restored destination picked %v", got)
	}
	if c.Pick(&PickHint{}) != nil || c.Pick(nil) != nil {
		t.Fatal("a host without a destination")
	}
	// a stays in use; the v6 host is swept, its pool closed.
	deadline := time.Now().Add(3 * time.Second)
	for len(c.Hosts().All) != 1 && time.Now().Before(deadline) {
		c.Pick(&PickHint{Local: tcpAddr("10.1.2.3:8080")})
		time.Sleep(20 * time.Millisecond)
	}
	if all := c.Hosts().All; len(all) != 1 || all[0] != a || a.removed.Load() {
		t.Fatalf("after the sweep: %v", all)
	}
}

func TestOriginalDstPortOverride(t *testing.T) {
	c, err := buildJSON(t, `{"name":"pass","type":"ORIGINAL_DST","lb_policy":"CLUSTER_PROVIDED","original_dst_lb_config":{"upstream_port_override":15008}}`)
	if err != nil {
		t.Fatal(err)
	}
	var h protocol.Headers
	h.Set("x-envoy-original-dst-host", "10.0.0.9:80") // not read without use_http_header
	if got := c.Pick(&PickHint{Local: tcpAddr("10.1.2.3:8080"), Headers: &h}); got == nil || got.Addr != "10.1.2.3:15008" {
		t.Fatalf("picked %v, want 10.1.2.3:15008", got)
	}
}

func TestOriginalDstRefused(t *testing.T) {
	for js, want := range map[string]string{
		`{"name":"a","type":"ORIGINAL_DST","lb_policy":"ROUND_ROBIN"}`:                                                                                 "lb_policy: an ORIGINAL_DST cluster needs CLUSTER_PROVIDED",
		`{"name":"a","type":"STATIC","lb_policy":"CLUSTER_PROVIDED"}`:                                                                                  "lb_policy: CLUSTER_PROVIDED is only for type ORIGINAL_DST",
		`{"name":"a","type":"STATIC","cleanup_interval":"1s"}`:                                                                                         "cleanup_interval: only for type ORIGINAL_DST",
		`{"name":"a","type":"ORIGINAL_DST","lb_policy":"CLUSTER_PROVIDED","load_assignment":{"cluster_name":"a"}}`:                                     "load_assignment: an ORIGINAL_DST cluster takes",
		`{"name":"a","type":"ORIGINAL_DST","lb_policy":"CLUSTER_PROVIDED","original_dst_lb_config":{"metadata_key":{"key":"k","path":[{"key":"p"}]}}}`: "original_dst_lb_config.metadata_key: not supported",
	} {
		if _, err := buildJSON(t, js); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", js, err, want)
		}
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
