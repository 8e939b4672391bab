// Package istioalpn is Istio's ALPN filter ("istio.alpn", config type
// istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig, which Istio's
// pilot puts in every connection manager it sends): it chooses the ALPN
// protocols the request's upstream TLS connection offers, by the HTTP
// version the route's cluster speaks for it, so that an Istio sidecar on
// the other side learns the protocol from the handshake.
//
// For each request with a route to a cluster: unless the cluster's
// metadata says istio.alpn_override "false" (pilot's mark for clusters
// whose TLS a DestinationRule configures), the alpn_override list of the
// cluster's protocol for this request (HTTP10, HTTP11, HTTP2: the
// downstream's with use_downstream_protocol_config, HTTP/2 with
// auto_config, else the configured one) goes into the filter state
// envoy.network.application_protocols. The upstream offers it instead of
// the cluster's own ALPN, on connections pooled apart (upstream/alpn.go);
// a cluster without TLS has nothing to negotiate.
//
// The config's schema is Istio's (istio/proxy's alpn config.proto),
// declared here as a descriptor: the only Go package that carries it is
// Istio's API module, too large a dependency for three fields.
package istioalpn

import (
	"fmt"

	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Name is the name Istio gives the filter.
const Name = "istio.alpn"

const pkg = "istio.envoy.config.filter.http.alpn.v2alpha1"

// The upstream protocols of the config's enum, by value.
var protocols = [...]string{"HTTP/1.0", "HTTP/1.1", "HTTP/2"}

func init() {
	mt, err := register()
	if err != nil {
		panic("istioalpn: " + err.Error())
	}
	filter.RegisterHTTP(Name, mt.New().Interface(), func(bc *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		return build(bc, m)
	})
}

// register declares FilterConfig { repeated AlpnOverride alpn_override = 1; }
// with AlpnOverride { Protocol upstream_protocol = 1; repeated string
// alpn_override = 2; } and enum Protocol { HTTP10 = 0; HTTP11 = 1;
// HTTP2 = 2; }, and registers it for typed_config.
func register() (protoreflect.MessageType, error) {
	s := proto.String
	rep, opt := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum(), descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	fd := &descriptorpb.FileDescriptorProto{
		Name: s("envoy/config/filter/http/alpn/v2alpha1/config.proto"), Package: s(pkg), Syntax: s("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: s("FilterConfig"),
			Field: []*descriptorpb.FieldDescriptorProto{{Name: s("alpn_override"), JsonName: s("alpnOverride"), Number: proto.Int32(1),
				Label: rep, Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: s("." + pkg + ".FilterConfig.AlpnOverride")}},
			NestedType: []*descriptorpb.DescriptorProto{{
				Name: s("AlpnOverride"),
				Field: []*descriptorpb.FieldDescriptorProto{
					{Name: s("upstream_protocol"), JsonName: s("upstreamProtocol"), Number: proto.Int32(1), Label: opt,
						Type: descriptorpb.FieldDescriptorProto_TYPE_ENUM.Enum(), TypeName: s("." + pkg + ".FilterConfig.Protocol")},
					{Name: s("alpn_override"), JsonName: s("alpnOverride"), Number: proto.Int32(2), Label: rep,
						Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()},
				},
			}},
			EnumType: []*descriptorpb.EnumDescriptorProto{{
				Name: s("Protocol"),
				Value: []*descriptorpb.EnumValueDescriptorProto{{Name: s("HTTP10"), Number: proto.Int32(0)},
					{Name: s("HTTP11"), Number: proto.Int32(1)}, {Name: s("HTTP2"), Number: proto.Int32(2)}},
			}},
		}},
	}
	file, err := protodesc.NewFile(fd, protoregistry.GlobalFiles)
	if err != nil {
		return nil, err
	}
	if err := protoregistry.GlobalFiles.RegisterFile(file); err != nil {
		return nil, err
	}
	mt := dynamicpb.NewMessageType(file.Messages().ByName("FilterConfig"))
	return mt, protoregistry.GlobalTypes.RegisterMessage(mt)
}

type factory struct {
	clusters filter.Clusters
	// lists are the overrides by upstream protocol ("HTTP/1.1").
	lists map[string][]string
}

func build(bc *filter.BuildContext, m proto.Message) (*factory, error) {
	f := &factory{clusters: bc.Clusters, lists: map[string][]string{}}
	md := m.ProtoReflect().Descriptor()
	overrides := m.ProtoReflect().Get(md.Fields().ByName("alpn_override")).List()
	for i := 0; i < overrides.Len(); i++ {
		o := overrides.Get(i).Message()
		od := o.Descriptor()
		p := int(o.Get(od.Fields().ByName("upstream_protocol")).Enum())
		if p < 0 || p >= len(protocols) {
			return nil, fmt.Errorf("alpn_override[%d].upstream_protocol: unknown protocol %d", i, p)
		}
		names := o.Get(od.Fields().ByName("alpn_override")).List()
		var list []string
		for j := 0; j < names.Len(); j++ {
			list = append(list, names.Get(j).String())
		}
		if _, dup := f.lists[protocols[p]]; dup {
			return nil, fmt.Errorf("alpn_override[%d].upstream_protocol: %s given twice", i, protocols[p])
		}
		f.lists[protocols[p]] = list
	}
	return f, nil
}

func (f *factory) New() filter.StreamFilter { return f }

func (f *factory) DecodeHeaders(cb filter.Callbacks, _ *protocol.Headers, _ bool) filter.Status {
	c, ok := f.clusters.Get(cb.ClusterName())
	if !ok {
		return filter.Continue
	}
	if md := c.Metadata(); md != nil {
		if v := md.GetFilterMetadata()["istio"].GetFields()["alpn_override"]; v.GetStringValue() == "false" {
			return filter.Continue
		}
	}
	info := cb.Info()
	if list := f.lists[c.UpstreamProtocol(info.Protocol)]; len(list) > 0 {
		info.SetState(filter.StateApplicationProtocols, list)
	}
	return filter.Continue
}
