package accesslog

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/straitproxy/strait/config"
)

// Filter decides whether an entry is logged (an access_log's filter).
type Filter interface {
	Match(e *Entry) bool
}

// buildFilter compiles an AccessLogFilter; errors name the field.
func buildFilter(f *accesslogv3.AccessLogFilter, rt *config.Runtime) (Filter, error) {
	switch {
	case f.GetStatusCodeFilter() != nil:
		c, err := comparison(f.GetStatusCodeFilter().GetComparison(), rt)
		return statusFilter{c}, config.At("status_code_filter.comparison", err)
	case f.GetDurationFilter() != nil:
		c, err := comparison(f.GetDurationFilter().GetComparison(), rt)
		return durationFilter{c}, config.At("duration_filter.comparison", err)
	case f.GetNotHealthCheckFilter() != nil:
		// A request is a health check only when a health_check HTTP
		// filter says so, and Strait has none: every request passes.
		return matchAll{}, nil
	case f.GetRuntimeFilter() != nil:
		r := f.GetRuntimeFilter()
		pct := r.GetPercentSampled()
		if pct == nil {
			pct = &typev3.FractionalPercent{Numerator: 0}
		}
		return &runtimeFilter{rt: rt, key: r.GetRuntimeKey(), pct: pct, independent: r.GetUseIndependentRandomness()}, nil
	case f.GetAndFilter() != nil:
		fs, err := buildFilters(f.GetAndFilter().GetFilters(), rt)
		return andFilter(fs), config.At("and_filter.filters", err)
	case f.GetOrFilter() != nil:
		fs, err := buildFilters(f.GetOrFilter().GetFilters(), rt)
		return orFilter(fs), config.At("or_filter.filters", err)
	case f.GetResponseFlagFilter() != nil:
		var mask Flags
		for i, name := range f.GetResponseFlagFilter().GetFlags() {
			fl, ok := ParseFlag(name)
			if !ok {
				return nil, config.At(fmt.Sprintf("response_flag_filter.flags[%d]", i),
					fmt.Errorf("unknown response flag %q (known: %s)", name, FlagNames()))
			}
			mask |= fl
		}
		if mask == 0 {
			mask = ^Flags(0) // no flags listed: any flag
		}
		return flagFilter(mask), nil
	}
	return nil, fmt.Errorf("empty filter")
}

func buildFilters(list []*accesslogv3.AccessLogFilter, rt *config.Runtime) ([]Filter, error) {
	out := make([]Filter, 0, len(list))
	for i, f := range list {
		b, err := buildFilter(f, rt)
		if err != nil {
			return nil, config.At(fmt.Sprintf("[%d]", i), err)
		}
		out = append(out, b)
	}
	return out, nil
}

// cmp is a ComparisonFilter: op against a value a runtime key may
// override.
type cmp struct {
	op  accesslogv3.ComparisonFilter_Op
	def uint32
	key string
	rt  *config.Runtime
}

func comparison(c *accesslogv3.ComparisonFilter, rt *config.Runtime) (cmp, error) {
	if c.GetValue() == nil {
		return cmp{}, config.At("value", fmt.Errorf("required"))
	}
	return cmp{op: c.GetOp(), def: c.GetValue().GetDefaultValue(), key: c.GetValue().GetRuntimeKey(), rt: rt}, nil
}

func (c cmp) match(v uint64) bool {
	want := uint64(c.def)
	if c.key != "" && c.rt != nil {
		if e, ok := c.rt.Snapshot().Get(c.key); ok && e.IsNum && e.Num >= 0 {
			want = uint64(e.Num)
		}
	}
	switch c.op {
	case accesslogv3.ComparisonFilter_GE:
		return v >= want
	case accesslogv3.ComparisonFilter_LE:
		return v <= want
	case accesslogv3.ComparisonFilter_NE:
		return v != want
	}
	return v == want
}

type statusFilter struct{ c cmp }

func (f statusFilter) Match(e *Entry) bool { return f.c.match(uint64(e.ResponseCode)) }

type durationFilter struct{ c cmp }

// Match compares the whole duration in milliseconds, as Envoy does.
func (f durationFilter) Match(e *Entry) bool {
	return e.Duration >= 0 && f.c.match(uint64(e.Duration.Milliseconds()))
}

type matchAll struct{}

func (matchAll) Match(*Entry) bool { return true }

type runtimeFilter struct {
	rt          *config.Runtime
	key         string
	pct         *typev3.FractionalPercent
	independent bool
}

// Match samples: by the request's x-request-id unless independent
// randomness is asked for (so every log of a request agrees), else at
// random.
func (f *runtimeFilter) Match(e *Entry) bool {
	r := rand.Uint64()
	if !f.independent && e.Request != nil {
		if id, ok := e.Request.Get("x-request-id"); ok && len(id) > 0 {
			h := fnv.New64a()
			h.Write(id)
			r = h.Sum64()
		}
	}
	if f.rt == nil {
		return config.NewRuntime().Snapshot().FeatureEnabled(f.key, f.pct, r)
	}
	return f.rt.Snapshot().FeatureEnabled(f.key, f.pct, r)
}

type andFilter []Filter

func (fs andFilter) Match(e *Entry) bool {
	for _, f := range fs {
		if !f.Match(e) {
			return false
		}
	}
	return true
}

type orFilter []Filter

func (fs orFilter) Match(e *Entry) bool {
	for _, f := range fs {
		if f.Match(e) {
			return true
		}
	}
	return false
}

type flagFilter Flags

func (f flagFilter) Match(e *Entry) bool { return e.Flags&Flags(f) != 0 }
