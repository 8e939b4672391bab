package upstream

import (
	"log/slog"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/straitproxy/strait/stats"
	_ "github.com/straitproxy/strait/transport/tls" // a TLS socket for the auto_config case
	"google.golang.org/protobuf/encoding/protojson"
)

const socketMatches = `,"transport_socket_matches":[
	{"name":"v2","match":{"tlsMode":"istio","version":2},"transport_socket":{"name":"envoy.transport_sockets.raw_buffer"}},
	{"name":"tlsMode-istio","match":{"tlsMode":"istio"},"transport_socket":{"name":"envoy.transport_sockets.raw_buffer"}},
	{"name":"v2","match":{"release":"2"},"transport_socket":{"name":"envoy.transport_sockets.raw_buffer"}},
	{"name":"plain","match":{"app":"x"},"transport_socket":{"name":"envoy.transport_sockets.raw_buffer"}}]`

func withMatch(md string) string {
	return `,"metadata":{"filter_metadata":{"envoy.transport_socket_match":` + md + `}}`
}

// TestTransportSocketMatches: each host takes the first match whose
// fields all equal its envoy.transport_socket_match metadata, else the
// cluster's transport_socket; an endpoint whose metadata comes to match
// another socket becomes a new host, one whose match is unchanged keeps
// its host; total_match_count counts resolutions per match.
func TestTransportSocketMatches(t *testing.T) {
	c := edsCluster(t, socketMatches)
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+
		ep("127.0.0.1", 1, withMatch(`{"tlsMode":"istio","version":2}`))+`,`+
		ep("127.0.0.1", 2, withMatch(`{"tlsMode":"disabled","app":"x"}`))+`,`+
		ep("127.0.0.1", 3, "")+`,`+
		ep("127.0.0.1", 4, withMatch(`{"tlsMode":"istio","version":"2"}`))+`,`+
		ep("127.0.0.1", 5, withMatch(`{"release":"2","app":"x"}`))+`]}]}`))
	names := func() string {
		var out []string
		for _, h := range c.Hosts().All {
			out = append(out, h.sock.name)
		}
		return strings.Join(out, ",")
	}
	// Every field must match (the number 2, not the string "2"); the
	// first match wins (v2 before plain); no metadata: the cluster's own
	// socket (""). Two matches of one name share their count.
	if got := names(); got != "v2,plain,,tlsMode-istio,v2" {
		t.Fatalf("sockets: %q", got)
	}
	count := func(name string) uint64 { return c.statsScope.Counter(name).Value() }
	if count("tlsMode-istio.total_match_count") != 1 || count("plain.total_match_count") != 1 ||
		count("v2.total_match_count") != 2 || count("default.total_match_count") != 1 {
		t.Fatalf("match counts: %d %d %d %d", count("tlsMode-istio.total_match_count"), count("plain.total_match_count"),
			count("v2.total_match_count"), count("default.total_match_count"))
	}
	before := c.Hosts().All
	apply(t, c, cla(t, `{"cluster_name":"c","endpoints":[{"lb_endpoints":[`+
		ep("127.0.0.1", 1, withMatch(`{"tlsMode":"istio","version":2,"other":true}`))+`,`+
		ep("127.0.0.1", 2, withMatch(`{"tlsMode":"istio"}`))+`,`+
		ep("127.0.0.1", 3, "")+`]}]}`))
	after := c.Hosts().All
	if after[0] != before[0] || after[2] != before[2] {
		t.Error("an endpoint whose socket is unchanged got a new host")
	}
	if after[1] == before[1] || !before[1].removed.Load() || after[1].sock.name != "tlsMode-istio" {
		t.Error("an endpoint that now matches another socket kept its host (and the old socket's connections)")
	}
}

func TestTransportSocketMatchesRefused(t *testing.T) {
	for extra, want := range map[string]string{
		`,"transport_socket_matches":[{"name":"","transport_socket":{"name":"envoy.transport_sockets.raw_buffer"}}]`: `transport_socket_matches[0].name`,
		// A TLS transport_socket, but a match that is not: auto_config
		// could not negotiate with the hosts it takes.
		`,"transport_socket":{"name":"envoy.transport_sockets.tls","typed_config":{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"}},
		  "transport_socket_matches":[{"name":"a","transport_socket":{"name":"envoy.transport_sockets.raw_buffer"}}],
		  "typed_extension_protocol_options":{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":{
		  "@type":"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions","auto_config":{}}}`: `auto_config: chooses the protocol by ALPN`,
		`,"transport_socket_matches":[{"name":"a"}]`:                                                           `transport_socket_matches[0].transport_socket: required`,
		`,"transport_socket_matches":[{"name":"a","transport_socket":{"name":"envoy.transport_sockets.tls"}}]`: `transport_socket_matches[0].transport_socket.typed_config: required`,
		`,"transport_socket_matches":[{"name":"a","transport_socket":{"name":"envoy.transport_sockets.raw_buffer"}}],
		  "typed_extension_protocol_options":{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":{
		  "@type":"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions","auto_config":{}}}`: `auto_config: chooses the protocol by ALPN`,
	} {
		var cl clusterv3.Cluster
		if err := protojson.Unmarshal([]byte(`{"name":"c","type":"STATIC"`+extra+`}`), &cl); err != nil {
			t.Fatal(err)
		}
		_, err := BuildCluster(&cl, stats.NewStore().Root(), slog.Default())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %s", extra, err, want)
		}
	}
}
