// Package istiomd is what Istio's metadata exchange tells a peer about
// this proxy: its node's identity as a google.protobuf.Struct. The HTTP
// filter (x-envoy-peer-metadata) and the upstream network filter
// (istio-peer-exchange) both send it.
package istiomd

import (
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// The header names, which the TCP exchange uses as its keys too.
const (
	HeaderMetadata = "x-envoy-peer-metadata"
	HeaderID       = "x-envoy-peer-metadata-id"
)

// The node metadata keys a workload tells its peers, and the labels.
var (
	metadataKeys = []string{"NAME", "NAMESPACE", "WORKLOAD_NAME", "CLUSTER_ID", "OWNER", "MESH_ID", "SERVICE_ACCOUNT"}
	labelKeys    = []string{"service.istio.io/canonical-name", "service.istio.io/canonical-revision", "app", "version"}
)

// Workload is node's identity for its peers: its metadata's identity
// keys, LABELS narrowed to the ones peers read (and extra), and its
// locality (REGION, AVAILABILITY_ZONE).
func Workload(n *corev3.Node, extra []string) *structpb.Struct {
	md := n.GetMetadata().GetFields()
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, k := range metadataKeys {
		if v, ok := md[k]; ok && v.GetStringValue() != "" {
			out.Fields[k] = structpb.NewStringValue(v.GetStringValue())
		}
	}
	labels := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	keys := append(append([]string(nil), labelKeys...), extra...)
	sort.Strings(keys)
	for _, k := range keys {
		if v, ok := md["LABELS"].GetStructValue().GetFields()[k]; ok {
			labels.Fields[k] = v
		}
	}
	if len(labels.Fields) > 0 {
		out.Fields["LABELS"] = structpb.NewStructValue(labels)
	}
	if r := n.GetLocality().GetRegion(); r != "" {
		out.Fields["REGION"] = structpb.NewStringValue(r)
	}
	if z := n.GetLocality().GetZone(); z != "" {
		out.Fields["AVAILABILITY_ZONE"] = structpb.NewStringValue(z)
	}
	return out
}
