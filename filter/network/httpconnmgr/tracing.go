package httpconnmgr

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/proxy"
)

// tracingSettings reads request_id_extension, always_set_request_id_in_response
// and the tracing block: the decision Envoy makes for each request is
// made and packed into x-request-id (proxy/tracing.go); with a provider,
// a traced request also gets a span from its tracer (proxy/tracer.go).
func tracingSettings(bc *filter.BuildContext, cfg *proxy.Config, m *hcmv3.HttpConnectionManager) error {
	cfg.RequestID = proxy.DefaultRequestID
	if ext := m.GetRequestIdExtension(); ext != nil {
		var u uuidv3.UuidRequestIdConfig
		tc := ext.GetTypedConfig()
		want := u.ProtoReflect().Descriptor().FullName()
		if tc == nil || tc.MessageName() != want {
			return config.At("request_id_extension.typed_config", fmt.Errorf("%q is not supported (supported: %s)", tc.GetTypeUrl(), want))
		}
		if err := tc.UnmarshalTo(&u); err != nil {
			return config.At("request_id_extension.typed_config", err)
		}
		if v := u.GetPackTraceReason(); v != nil {
			cfg.RequestID.PackTraceReason = v.GetValue()
		}
		if v := u.GetUseRequestIdForTraceSampling(); v != nil {
			cfg.RequestID.UseForSampling = v.GetValue()
		}
	}
	cfg.AlwaysSetRequestIDInResponse = m.GetAlwaysSetRequestIdInResponse()
	t := m.GetTracing()
	if t == nil {
		return nil
	}
	rt := bc.Runtime
	if rt == nil {
		rt = config.NewRuntime()
	}
	cfg.Tracing = &proxy.Tracing{ClientSampling: perHundred(t.GetClientSampling()),
		RandomSampling: perTenThousand(t.GetRandomSampling()), OverallSampling: perTenThousand(t.GetOverallSampling()), Runtime: rt}
	cfg.Tracing.SpawnUpstream = t.GetSpawnUpstreamSpan().GetValue()
	cfg.Tracing.Outbound = bc.Outbound
	cfg.Tracing.NodeID, cfg.Tracing.Zone = bc.Node.GetId(), bc.Node.GetLocality().GetZone()
	if n := t.GetMaxPathTagLength(); n != nil {
		if n.GetValue() == 0 {
			return config.At("tracing.max_path_tag_length", fmt.Errorf("must be at least 1"))
		}
		cfg.Tracing.MaxPathTagLength = int(min(n.GetValue(), math.MaxInt32))
	}
	for i, ct := range t.GetCustomTags() {
		tag := proxy.CustomTag{Name: ct.GetTag()}
		switch {
		case ct.GetLiteral() != nil:
			tag.Value = ct.GetLiteral().GetValue()
		case ct.GetEnvironment() != nil:
			tag.Value = cmp.Or(os.Getenv(ct.GetEnvironment().GetName()), ct.GetEnvironment().GetDefaultValue())
		case ct.GetRequestHeader() != nil:
			tag.Header, tag.Default = strings.ToLower(ct.GetRequestHeader().GetName()), ct.GetRequestHeader().GetDefaultValue()
		case ct.GetMetadata() != nil:
			md := ct.GetMetadata()
			path := fmt.Sprintf("tracing.custom_tags[%d].metadata", i)
			if md.GetKind().GetRequest() == nil {
				return config.At(path+".kind", fmt.Errorf("only request (dynamic) metadata is supported"))
			}
			segs := md.GetMetadataKey().GetPath()
			if len(segs) != 1 {
				return config.At(path+".metadata_key.path", fmt.Errorf("one key is supported (a filter's value), got %d", len(segs)))
			}
			tag.MetaNS, tag.MetaKey, tag.Default = md.GetMetadataKey().GetKey(), segs[0].GetKey(), md.GetDefaultValue()
		}
		cfg.Tracing.Tags = append(cfg.Tracing.Tags, tag)
	}
	if p := t.GetProvider(); p != nil {
		tc := p.GetTypedConfig()
		ext, ok := config.ByTypeURL(config.Tracer, tc.GetTypeUrl())
		if !ok {
			return config.At("tracing.provider.typed_config", fmt.Errorf("tracer %q is not supported (supported: %s)", tc.GetTypeUrl(),
				strings.Join(config.TypeURLs(config.Tracer), ", ")))
		}
		tr, err := ext.Factory.(proxy.TracerFactory)(bc, tc)
		if err != nil {
			return config.At("tracing.provider.typed_config", err)
		}
		cfg.Tracing.Tracer = tr
	}
	return nil
}

// perHundred is client_sampling as Envoy reads it: the whole percent,
// truncated, of a hundred; unset is 100%.
func perHundred(p *typev3.Percent) *typev3.FractionalPercent {
	n := uint32(100)
	if p != nil {
		n = uint32(p.GetValue())
	}
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}
}

// perTenThousand turns a tracing Percent into Envoy's fraction of ten
// thousand, rounded; unset is 100%.
func perTenThousand(p *typev3.Percent) *typev3.FractionalPercent {
	n := uint32(10000)
	if p != nil {
		n = uint32(math.Round(p.GetValue() * 100))
	}
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_TEN_THOUSAND}
}
