package test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestIstioMetadataExchange: Istio's metadata exchange filter tells the
// upstream who this proxy is (its node id, and its node metadata and
// locality as a base64 Struct, labels narrowed to the ones peers read),
// learns who the upstream is from its answer into the filter state, and
// keeps those headers from the client; a cluster with istio.disable_mx
// gets nothing; baggage is refused.
func TestIstioMetadataExchange(t *testing.T) {
	seen := make(chan http.Header, 4)
	backend := &structpb.Struct{Fields: map[string]*structpb.Value{"NAME": structpb.NewStringValue("backend-1")}}
	raw, _ := proto.Marshal(backend)
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("x-envoy-peer-metadata", base64.StdEncoding.EncodeToString(raw))
		w.Header().Set("x-envoy-peer-metadata-id", "sidecar~10.0.0.2~backend-1.ns~ns.svc.cluster.local")
	}, false)
	const node = `
node:
  id: router~10.0.0.1~gw-1.ns~ns.svc.cluster.local
  locality: { region: r1, zone: z1 }
  metadata: { NAME: gw-1, NAMESPACE: ns, CLUSTER_ID: Kubernetes, ISTIO_VERSION: "1.30.0", LABELS: { app: gw, istio: ingressgateway } }`
	mx := func(value string) string {
		y := node + httpBootstrap(addr, routeCfg{}, "")
		return strings.Replace(y, "          http_filters:\n", `          http_filters:
          - name: strait.test.probe
            typed_config: { "@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: `+probeURL+`, value: { tag: mx } }
          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value: `+value+`
`, 1)
	}
	y := mx(`{ upstream_discovery: [ { istio_headers: {} }, { workload_discovery: {} } ], upstream_propagation: [ { istio_headers: {} } ] }`)
	p := startProxy(t, y)
	resp, err := http.Get(p.url("ingress") + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	up := <-seen
	if up.Get("x-envoy-peer-metadata-id") != "router~10.0.0.1~gw-1.ns~ns.svc.cluster.local" {
		t.Fatalf("the upstream saw id %q", up.Get("x-envoy-peer-metadata-id"))
	}
	b, err := base64.StdEncoding.DecodeString(up.Get("x-envoy-peer-metadata"))
	var told structpb.Struct
	if err != nil || proto.Unmarshal(b, &told) != nil {
		t.Fatalf("the upstream got metadata it cannot read: %q", up.Get("x-envoy-peer-metadata"))
	}
	m := told.AsMap()
	labels, _ := m["LABELS"].(map[string]any)
	if m["NAME"] != "gw-1" || m["NAMESPACE"] != "ns" || m["CLUSTER_ID"] != "Kubernetes" || m["REGION"] != "r1" ||
		m["AVAILABILITY_ZONE"] != "z1" || m["ISTIO_VERSION"] != nil || len(labels) != 1 || labels["app"] != "gw" {
		t.Fatalf("the upstream was told %v", m)
	}
	if resp.Header.Get("x-envoy-peer-metadata") != "" || resp.Header.Get("x-envoy-peer-metadata-id") != "" {
		t.Fatalf("the client saw the upstream's exchange headers: %v", resp.Header)
	}
	p.settle()
	info := probeInfo.Load()
	learned, _ := info.State["upstream_peer"].(*structpb.Struct)
	if learned.GetFields()["NAME"].GetStringValue() != "backend-1" || info.State["upstream_peer_id"] != "sidecar~10.0.0.2~backend-1.ns~ns.svc.cluster.local" {
		t.Fatalf("filter state %v", info.State)
	}

	off := strings.Replace(y, "  - name: backend\n", "  - name: backend\n    metadata: { filter_metadata: { istio: { disable_mx: true } } }\n", 1)
	p = startProxy(t, off)
	if code, _ := get(t, p.url("ingress")+"/"); code != 200 {
		t.Fatalf("disable_mx: %d", code)
	}
	if up := <-seen; up.Get("x-envoy-peer-metadata") != "" {
		t.Fatal("a cluster with istio.disable_mx was told the metadata")
	}
	if _, err := buildServer(mx(`{ upstream_propagation: [ { baggage: {} } ] }`)); err == nil || !strings.Contains(err.Error(), "upstream_propagation[0].baggage: not supported yet") {
		t.Fatalf("baggage: %v", err)
	}
}
