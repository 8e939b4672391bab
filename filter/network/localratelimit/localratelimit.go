// Package localratelimit is envoy.filters.network.local_ratelimit: each
// new connection takes a token from the filter's bucket (shared with the
// filters of the same share_key and bucket); with none left it is closed
// at once, before its bytes go on. Stats under
// local_ratelimit.<stat_prefix>.: rate_limited.
package localratelimit

import (
	"errors"

	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/tokenbucket"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.network.local_ratelimit"

func init() {
	filter.RegisterNetwork(Name, &lrlv3.LocalRateLimit{}, func(bc *filter.BuildContext, m proto.Message) (filter.NetworkFactory, error) {
		f, err := build(bc, m.(*lrlv3.LocalRateLimit))
		if err != nil {
			return nil, err
		}
		return filter.ReadFilterFactory(f), nil
	})
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit": `stat_prefix token_bucket runtime_enabled share_key`,
	"envoy.config.core.v3.RuntimeFeatureFlag":                            `default_value runtime_key`,
})

type factory struct {
	bucket      *tokenbucket.Bucket
	enabledKey  string
	enabledDef  bool
	rt          *config.Runtime
	rateLimited *stats.Counter
}

func build(bc *filter.BuildContext, m *lrlv3.LocalRateLimit) (*factory, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	if m.GetStatPrefix() == "" {
		return nil, config.At("stat_prefix", errors.New("required"))
	}
	spec, err := tokenbucket.FromProto(m.GetTokenBucket())
	if fe, ok := err.(*tokenbucket.FieldError); ok {
		return nil, config.At(fe.Field, fe.Err)
	}
	f := &factory{enabledDef: true, rt: bc.Runtime}
	if re := m.GetRuntimeEnabled(); re != nil {
		if re.GetDefaultValue() == nil {
			return nil, config.At("runtime_enabled.default_value", errors.New("required"))
		}
		f.enabledDef, f.enabledKey = re.GetDefaultValue().GetValue(), re.GetRuntimeKey()
	}
	if k := m.GetShareKey(); k != "" {
		f.bucket = tokenbucket.Shared(k, spec)
	} else {
		f.bucket = tokenbucket.New(spec)
	}
	f.rateLimited = bc.Stats.Scope("local_ratelimit", "", m.GetStatPrefix()).Counter("rate_limited")
	return f, nil
}

// enabled reads runtime_enabled (unset: on).
func (f *factory) enabled() bool {
	if f.enabledKey == "" || f.rt == nil {
		return f.enabledDef
	}
	if e, ok := f.rt.Snapshot().Get(f.enabledKey); ok && e.IsBool {
		return e.Bool
	}
	return f.enabledDef
}

// NewReadFilter implements filter.NetworkReadFactory.
func (f *factory) NewReadFilter(*network.Conn) (filter.ReadFilter, error) { return conn{f}, nil }

type conn struct{ f *factory }

// OnNewConnection takes the connection's token, or closes it.
func (c conn) OnNewConnection(cb filter.ConnCallbacks) filter.Status {
	if !c.f.enabled() {
		return filter.Continue
	}
	if ok, _, _ := c.f.bucket.Take(); ok {
		return filter.Continue
	}
	c.f.rateLimited.Inc()
	cb.Close(false)
	return filter.Stop
}

func (conn) OnData(_ filter.ConnCallbacks, data []byte, _ bool) (int, filter.Status) {
	return len(data), filter.Continue
}
