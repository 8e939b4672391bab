package upstream

import (
	"errors"
	"log/slog"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// httpOptionsKey is where a cluster's HTTP protocol options live.
const httpOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// upgradeCluster maps the deprecated HTTP protocol fields that v3 still
// carries, and that Envoy's own examples and go-control-plane's sample
// bootstraps still use, to their replacement, as Envoy does:
// http_protocol_options, http2_protocol_options,
// common_http_protocol_options, upstream_http_protocol_options and
// protocol_selection become typed_extension_protocol_options'
// HttpProtocolOptions. Each is named in one warning. A cluster that sets
// both forms is refused, as in Envoy. cl is not modified: an upgraded
// copy is returned.
func upgradeCluster(cl *clusterv3.Cluster, log *slog.Logger) (*clusterv3.Cluster, error) {
	//nolint:staticcheck // reading the deprecated fields is the point
	h1, h2, common, up, sel := cl.GetHttpProtocolOptions(), cl.GetHttp2ProtocolOptions(),
		cl.GetCommonHttpProtocolOptions(), cl.GetUpstreamHttpProtocolOptions(), cl.GetProtocolSelection()
	if h1 == nil && h2 == nil && common == nil && up == nil && sel == clusterv3.Cluster_USE_CONFIGURED_PROTOCOL {
		return cl, nil
	}
	if _, both := cl.GetTypedExtensionProtocolOptions()[httpOptionsKey]; both {
		return nil, config.At("typed_extension_protocol_options["+httpOptionsKey+"]",
			errors.New("cannot be set with the deprecated http_protocol_options, http2_protocol_options, common_http_protocol_options, upstream_http_protocol_options or protocol_selection"))
	}
	for _, f := range []struct {
		set  bool
		name string
	}{{h1 != nil, "http_protocol_options"}, {h2 != nil, "http2_protocol_options"}, {common != nil, "common_http_protocol_options"},
		{up != nil, "upstream_http_protocol_options"}, {sel != clusterv3.Cluster_USE_CONFIGURED_PROTOCOL, "protocol_selection"}} {
		if f.set {
			log.Warn("deprecated cluster field; use typed_extension_protocol_options."+httpOptionsKey+" instead", "cluster", cl.GetName(), "field", f.name)
		}
	}
	po := &httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: common, UpstreamHttpProtocolOptions: up}
	switch {
	case sel == clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL:
		po.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{HttpProtocolOptions: h1, Http2ProtocolOptions: h2}}
	case h2 != nil:
		po.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2}}}
	default:
		po.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: h1}}}
	}
	a, err := anypb.New(po)
	if err != nil {
		return nil, err
	}
	out := proto.Clone(cl).(*clusterv3.Cluster)
	out.HttpProtocolOptions, out.Http2ProtocolOptions, out.CommonHttpProtocolOptions = nil, nil, nil        //nolint:staticcheck
	out.UpstreamHttpProtocolOptions, out.ProtocolSelection = nil, clusterv3.Cluster_USE_CONFIGURED_PROTOCOL //nolint:staticcheck
	if out.TypedExtensionProtocolOptions == nil {
		out.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	}
	out.TypedExtensionProtocolOptions[httpOptionsKey] = a
	return out, nil
}
