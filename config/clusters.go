package config

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// clusterFields are the fields that name a cluster, by message.
var clusterFields = map[protoreflect.FullName]protoreflect.Name{
	"envoy.config.route.v3.RouteAction":                                                    "cluster",
	"envoy.config.route.v3.RouteAction.RequestMirrorPolicy":                                "cluster",
	"envoy.config.route.v3.WeightedCluster.ClusterWeight":                                  "name",
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":                               "cluster",
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": "name",
}

// ClusterNames adds to names every cluster m names: route actions
// (cluster, weighted clusters, mirror policies) and tcp_proxy (cluster,
// weighted clusters), inside typed configs too. It reads configs, not
// traffic: a listener update uses it to know which clusters its routes
// still need.
func ClusterNames(m proto.Message, names map[string]bool) {
	walkClusters(m.ProtoReflect(), names)
}

func walkClusters(m protoreflect.Message, names map[string]bool) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		if inner, err := a.UnmarshalNew(); err == nil {
			walkClusters(inner.ProtoReflect(), names)
		}
		return
	}
	field := clusterFields[m.Descriptor().FullName()]
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Name() == field && fd.Kind() == protoreflect.StringKind && !fd.IsList():
			if s := v.String(); s != "" {
				names[s] = true
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					walkClusters(mv.Message(), names)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walkClusters(l.Get(i).Message(), names)
				}
			}
		case fd.Message() != nil:
			walkClusters(v.Message(), names)
		}
		return true
	})
}
