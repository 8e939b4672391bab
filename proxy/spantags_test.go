package proxy

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/protocol"
)

func tagsOf(e *SpanEnd, upstream bool) map[string]string {
	out := map[string]string{}
	e.EnvoyTags(upstream, func(k, v string) {
		if _, dup := out[k]; dup {
			panic("tag " + k + " twice")
		}
		out[k] = v
	})
	return out
}

func headers(kv ...string) *protocol.Headers {
	h := &protocol.Headers{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// TestEnvoyTags: a request's span and an upstream attempt's carry the
// tags Envoy's HTTP tracer utility and tracer put on them.
func TestEnvoyTags(t *testing.T) {
	req := headers(":method", "POST", ":scheme", "http", ":authority", "api.example", ":path", "/v2/x",
		"x-forwarded-proto", "https", "x-envoy-original-path", "/"+strings.Repeat("p", 300),
		"x-request-id", "rid", "x-client-trace-id", "ctid", "content-type", "application/grpc+proto", "grpc-timeout", "5S")
	e := &SpanEnd{Request: req, Status: 200, Protocol: "HTTP/2", Cluster: "stats", ClusterName: "outbound|80||svc",
		UpstreamHost: "10.0.0.1:80", Peer: "192.0.2.1:5555", BytesReceived: 12, BytesSent: 34, Flags: accesslog.UpstreamRequestTimeout,
		Response: headers(":status", "200", "content-type", "application/grpc"), Trailers: headers("grpc-status", "14", "grpc-message", "down"),
		Local: &Tracing{NodeID: "node-1", Zone: "z1", MaxPathTagLength: 20}}
	got := tagsOf(e, false)
	want := map[string]string{
		"component": "proxy", "guid:x-request-id": "rid", "http.url": "https://api.example/" + strings.Repeat("p", 19),
		"http.method": "POST", "downstream_cluster": "-", "user_agent": "-", "peer.address": "192.0.2.1:5555",
		"guid:x-client-trace-id": "ctid", "grpc.path": "/v2/x", "grpc.authority": "api.example",
		"grpc.content_type": "application/grpc+proto", "grpc.timeout": "5S", "request_size": "12", "response_size": "34",
		"node_id": "node-1", "zone": "z1", "http.protocol": "HTTP/2", "upstream_cluster": "outbound|80||svc",
		"upstream_cluster.name": "stats", "upstream_address": "10.0.0.1:80", "http.status_code": "200",
		"response_flags": "UT", "grpc.status_code": "14", "grpc.message": "down", "error": "true",
	}
	if !maps.Equal(got, want) {
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if got[k] != want[k] {
				t.Errorf("%s = %q, want %q", k, got[k], want[k])
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("unexpected %s = %q", k, got[k])
			}
		}
	}
	// The upstream attempt: its host is the peer; no request or node tags.
	up := tagsOf(e, true)
	if up["peer.address"] != "10.0.0.1:80" || up["upstream_cluster"] != "outbound|80||svc" || up["http.status_code"] != "200" || up["error"] != "true" {
		t.Errorf("upstream span tags %v", up)
	}
	for _, k := range []string{"http.url", "http.method", "request_size", "node_id", "user_agent", "guid:x-request-id"} {
		if _, ok := up[k]; ok {
			t.Errorf("upstream span has %s", k)
		}
	}
	// A client's gRPC error is not the server's fault; headers given are
	// taken as they are; the default path length is 256; no cluster, no
	// cluster tags; no answer is an error.
	e = &SpanEnd{Request: headers(":method", "GET", ":scheme", "http", ":authority", "h", ":path", "/"+strings.Repeat("q", 400),
		"user-agent", "curl", "x-envoy-downstream-service-cluster", "edge"), Status: 200,
		Response: headers(":status", "200", "grpc-status", "5")}
	got = tagsOf(e, false)
	if got["error"] != "" || got["grpc.status_code"] != "5" || got["user_agent"] != "curl" || got["downstream_cluster"] != "edge" ||
		len(got["http.url"]) != len("http://h")+DefaultMaxPathTagLength || got["upstream_cluster"] != "" || got["node_id"] != "" {
		t.Errorf("tags %v", got)
	}
	if _, ok := got["upstream_cluster"]; ok {
		t.Error("upstream_cluster without a cluster")
	}
	e.Status, e.Response = 0, nil
	if tagsOf(e, false)["error"] != "true" {
		t.Error("no answer is not an error")
	}
}

// TestSpanName: Envoy's span names.
func TestSpanName(t *testing.T) {
	for _, tc := range []struct {
		e                SpanEnd
		upstream, client bool
		name             string
		isClient         bool
	}{
		{SpanEnd{Cluster: "c"}, true, false, "router c egress", true},
		{SpanEnd{Operation: "op", Outbound: true, Host: "h"}, false, true, "op", true},
		{SpanEnd{Outbound: true, Host: "h:80"}, false, true, "egress h:80", true},
		{SpanEnd{Outbound: true, Host: "h:80"}, false, false, "egress h:80", false}, // spawn_upstream_span: the SERVER side
		{SpanEnd{}, false, false, "ingress", false},
	} {
		if n, c := tc.e.Name(tc.upstream, tc.client); n != tc.name || c != tc.isClient {
			t.Errorf("%+v: %q %v, want %q %v", tc.e, n, c, tc.name, tc.isClient)
		}
	}
}
