package router

import (
	"errors"
	"fmt"
	"sort"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// filterConfigURL is the wrapper Envoy allows around a per-route config.
const filterConfigURL = "type.googleapis.com/envoy.config.route.v3.FilterConfig"

// FilterDisabled is the per-filter config of a route that disables the
// filter (FilterConfig{disabled: true}).
var FilterDisabled = &filterSwitch{on: false}

// FilterEnabled is the per-filter config of a route that enables a filter
// the connection manager disables by default (FilterConfig with neither
// disabled nor config).
var FilterEnabled = &filterSwitch{on: true}

// filterSwitch is not zero-sized: pointers to distinct zero-sized values
// may be equal.
type filterSwitch struct{ on bool }

// compileFilterConfigs decodes, validates and builds a
// typed_per_filter_config map, as Envoy does when the route configuration
// loads: each value's type must be the per-route config of a
// compiled-in HTTP filter (registered as config.HTTPPerRoute), must pass
// its validation, and is built by the filter's per-route builder into the
// value its filter reads. A value wrapped in FilterConfig with
// is_optional whose type no filter takes is left out, as Envoy ignores
// it; FilterConfig's disabled gives FilterDisabled. The result holds the
// built values by filter name, opaque to this package.
func compileFilterConfigs(m map[string]*anypb.Any, path string) (map[string]any, error) {
	if len(m) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make(map[string]any, len(m))
	for _, name := range names {
		p := fmt.Sprintf("%s[%s]", joinPath(path, "typed_per_filter_config"), name)
		a, optional := m[name], false
		if a.GetTypeUrl() == filterConfigURL {
			var fc routev3.FilterConfig
			if err := a.UnmarshalTo(&fc); err != nil {
				return nil, config.At(p, err)
			}
			if fc.GetDisabled() {
				out[name] = FilterDisabled
				continue
			}
			if fc.GetConfig() == nil {
				out[name] = FilterEnabled
				continue
			}
			a, optional = fc.GetConfig(), fc.GetIsOptional()
			p += ".config"
		}
		ext, msg, err := config.DecodeValue(config.HTTPPerRoute, a)
		var unknown *config.UnsupportedTypeError
		switch {
		case errors.As(err, &unknown) && optional:
			continue
		case errors.As(err, &unknown):
			return nil, config.At(p, fmt.Errorf("no compiled-in HTTP filter takes per-route config of type %q", unknown.TypeURL))
		case err != nil:
			return nil, config.At(p, err)
		}
		var built any = msg
		if b, ok := ext.Factory.(func(proto.Message) (any, error)); ok && b != nil {
			if built, err = b(msg); err != nil {
				return nil, config.At(p, err)
			}
		}
		out[name] = built
	}
	return out, nil
}

// Merger is a built per-route config that takes what it leaves unset
// from the config of a less specific level (route over virtual host over
// route configuration): Envoy's CORS filter reads each field of its
// policy from the most specific level that sets it. MergeOver returns the
// merged value; less is the less specific level's built value, of any
// filter's type (a FilterConfig switch too).
type Merger interface {
	MergeOver(less any) any
}

// mergeFilters overlays the more specific per-filter configs on the less
// specific ones, by filter name; a Merger merges with what it overlays.
func mergeFilters(base, over map[string]any) map[string]any {
	if len(over) == 0 {
		return base
	}
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if m, ok := v.(Merger); ok {
			if b, ok := out[k]; ok {
				v = m.MergeOver(b)
			}
		}
		out[k] = v
	}
	return out
}
