package httpconnmgr

import (
	"fmt"
	"math"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/proxy"
)

// tracingSettings reads request_id_extension, always_set_request_id_in_response
// and the tracing block. A tracing block names no provider here: the
// decision Envoy makes for each request is made and packed into
// x-request-id, with no span to report (proxy/tracing.go).
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
	if t.GetProvider() != nil {
		return config.At("tracing.provider", fmt.Errorf("not supported yet: no tracer is built (without a provider, the sampling decision is made and carried in x-request-id)"))
	}
	rt := bc.Runtime
	if rt == nil {
		rt = config.NewRuntime()
	}
	cfg.Tracing = &proxy.Tracing{ClientSampling: perHundred(t.GetClientSampling()),
		RandomSampling: perTenThousand(t.GetRandomSampling()), OverallSampling: perTenThousand(t.GetOverallSampling()), Runtime: rt}
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
