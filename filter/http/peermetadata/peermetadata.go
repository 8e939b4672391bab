// Package peermetadata is Istio's metadata exchange HTTP filter
// ("istio.metadata_exchange", config io.istio.http.peer_metadata.Config
// in a TypedStruct, as Istio's pilot sends it): workloads tell each other
// who they are in two headers, x-envoy-peer-metadata-id (the node id) and
// x-envoy-peer-metadata (base64 of a serialized google.protobuf.Struct of
// the workload: NAME, NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, OWNER, MESH_ID,
// LABELS with the canonical service name and revision, app, version and
// additional_labels, REGION, ZONE), taken from this proxy's node metadata
// and locality.
//
// With istio_headers:
//
//   - upstream_propagation sets both headers on the request upstream,
//     unless the route's cluster has metadata istio.disable_mx true, or
//     skip_external_clusters is set and the cluster is istio.external;
//   - upstream_discovery reads them from the upstream's response into the
//     filter state "upstream_peer" (the Struct) and
//     "upstream_peer_id", and removes them from the response;
//   - downstream_discovery reads them from the request into
//     "downstream_peer" / "downstream_peer_id" and removes them;
//   - downstream_propagation sets them on the response.
//
// workload_discovery looks a peer up in Istio's workload metadata
// bootstrap extension; without that extension (Strait has none) it finds
// nothing, as in Envoy. baggage and shared_with_upstream are refused.
package peermetadata

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/istiomd"
	"github.com/straitproxy/strait/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Name is the name Istio gives the filter; TypeURL its config's type.
const (
	Name    = "istio.metadata_exchange"
	TypeURL = "type.googleapis.com/io.istio.http.peer_metadata.Config"
)

// The exchange headers.
const (
	hdrID       = istiomd.HeaderID
	hdrMetadata = istiomd.HeaderMetadata
)

// The filter state keys of what was learned.
const (
	StateUpstreamPeer     = "upstream_peer"
	StateUpstreamPeerID   = "upstream_peer_id"
	StateDownstreamPeer   = "downstream_peer"
	StateDownstreamPeerID = "downstream_peer_id"
)

func init() {
	filter.RegisterHTTPStruct(Name, TypeURL, func(bc *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		return build(bc, m.(*structpb.Struct))
	})
}

type istioHeaders struct {
	SkipExternalClusters bool `json:"skip_external_clusters"`
}

type method struct {
	Baggage           *struct{}     `json:"baggage"`
	WorkloadDiscovery *struct{}     `json:"workload_discovery"`
	IstioHeaders      *istioHeaders `json:"istio_headers"`
}

type settings struct {
	DownstreamDiscovery   []method `json:"downstream_discovery"`
	UpstreamDiscovery     []method `json:"upstream_discovery"`
	DownstreamPropagation []method `json:"downstream_propagation"`
	UpstreamPropagation   []method `json:"upstream_propagation"`
	SharedWithUpstream    bool     `json:"shared_with_upstream"`
	AdditionalLabels      []string `json:"additional_labels"`
}

type factory struct {
	clusters filter.Clusters
	// What each direction does with the istio headers.
	discoverDown, discoverUp, propagateDown, propagateUp bool
	skipExternal                                         bool
	// id and value are this workload's headers.
	id, value string
}

func build(bc *filter.BuildContext, m *structpb.Struct) (*factory, error) {
	var s settings
	if err := config.DecodeStruct(snakeKeys(m), &s); err != nil {
		return nil, err
	}
	if s.SharedWithUpstream {
		return nil, config.At("shared_with_upstream", fmt.Errorf("not supported yet"))
	}
	f := &factory{clusters: bc.Clusters}
	for _, d := range []struct {
		name string
		list []method
		set  *bool
	}{{"downstream_discovery", s.DownstreamDiscovery, &f.discoverDown}, {"upstream_discovery", s.UpstreamDiscovery, &f.discoverUp},
		{"downstream_propagation", s.DownstreamPropagation, &f.propagateDown}, {"upstream_propagation", s.UpstreamPropagation, &f.propagateUp}} {
		for i, m := range d.list {
			path := fmt.Sprintf("%s[%d]", d.name, i)
			n := 0
			for _, set := range []bool{m.Baggage != nil, m.WorkloadDiscovery != nil, m.IstioHeaders != nil} {
				if set {
					n++
				}
			}
			switch {
			case n != 1:
				return nil, config.At(path, fmt.Errorf("exactly one of baggage, workload_discovery, istio_headers"))
			case m.Baggage != nil:
				return nil, config.At(path+".baggage", fmt.Errorf("not supported yet"))
			case m.WorkloadDiscovery != nil && strings.HasSuffix(d.name, "propagation"):
				return nil, config.At(path+".workload_discovery", fmt.Errorf("is a discovery method"))
			case m.IstioHeaders != nil:
				*d.set = true
				if d.name == "upstream_propagation" && m.IstioHeaders.SkipExternalClusters {
					f.skipExternal = true
				}
			}
		}
	}
	f.id = bc.Node.GetId()
	v, err := workloadMetadata(bc.Node, s.AdditionalLabels)
	if err != nil {
		return nil, err
	}
	f.value = v
	return f, nil
}

// snakeKeys returns s with its lowerCamel keys in snake_case (protobuf's
// JSON accepts both spellings of a field).
func snakeKeys(s *structpb.Struct) *structpb.Struct {
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for k, v := range s.GetFields() {
		out.Fields[snake(k)] = snakeValue(v)
	}
	return out
}

func snakeValue(v *structpb.Value) *structpb.Value {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		return structpb.NewStructValue(snakeKeys(x.StructValue))
	case *structpb.Value_ListValue:
		l := &structpb.ListValue{}
		for _, e := range x.ListValue.GetValues() {
			l.Values = append(l.Values, snakeValue(e))
		}
		return structpb.NewListValue(l)
	}
	return v
}

func snake(k string) string {
	var b strings.Builder
	for _, r := range k {
		if unicode.IsUpper(r) {
			b.WriteByte('_')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// workloadMetadata is the x-envoy-peer-metadata value of this node:
// base64 of its Struct serialized deterministically.
func workloadMetadata(n *corev3.Node, extra []string) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(istiomd.Workload(n, extra))
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// peer decodes a peer's x-envoy-peer-metadata; nil when it does not
// decode.
func peer(v []byte) *structpb.Struct {
	b, err := base64.StdEncoding.DecodeString(string(v))
	if err != nil {
		return nil
	}
	s := &structpb.Struct{}
	if proto.Unmarshal(b, s) != nil {
		return nil
	}
	return s
}

func (f *factory) New() filter.StreamFilter { return f }

// learn moves the exchange headers of h into the filter state.
func learn(cb filter.Callbacks, h *protocol.Headers, peerKey, idKey string) {
	if v, ok := h.Get(hdrMetadata); ok {
		if s := peer(v); s != nil {
			cb.Info().SetState(peerKey, s)
		}
	}
	if v, ok := h.Get(hdrID); ok && len(v) > 0 {
		cb.Info().SetState(idKey, string(v))
	}
	h.Del(hdrMetadata)
	h.Del(hdrID)
}

func (f *factory) tell(h *protocol.Headers) {
	if f.id != "" {
		h.Set(hdrID, f.id)
	}
	h.Set(hdrMetadata, f.value)
}

func (f *factory) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	if f.discoverDown {
		learn(cb, h, StateDownstreamPeer, StateDownstreamPeerID)
	}
	if f.propagateUp && f.toCluster(cb) {
		f.tell(h)
	}
	return filter.Continue
}

// toCluster reports whether the route's cluster takes the headers.
func (f *factory) toCluster(cb filter.Callbacks) bool {
	c, ok := f.clusters.Get(cb.ClusterName())
	if !ok {
		return false
	}
	istio := c.Metadata().GetFilterMetadata()["istio"].GetFields()
	if v := istio["disable_mx"]; v.GetBoolValue() || v.GetStringValue() == "true" {
		return false
	}
	if v := istio["external"]; f.skipExternal && (v.GetBoolValue() || v.GetStringValue() == "true") {
		return false
	}
	return true
}

func (f *factory) EncodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	if f.discoverUp {
		learn(cb, h, StateUpstreamPeer, StateUpstreamPeerID)
	}
	if f.propagateDown {
		f.tell(h)
	}
	return filter.Continue
}
