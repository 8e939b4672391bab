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

// compileFilterConfigs decodes and validates a typed_per_filter_config
// map, as Envoy does when the route configuration loads: each value's
// type must be the per-route config of a compiled-in HTTP filter
// (registered as config.HTTPPerRoute), and must pass its validation. A
// value wrapped in FilterConfig with is_optional whose type no filter
// takes is left out, as Envoy ignores it. The result holds the decoded
// messages by filter name, opaque to this package.
func compileFilterConfigs(m map[string]*anypb.Any, path string) (map[string]proto.Message, error) {
	if len(m) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make(map[string]proto.Message, len(m))
	for _, name := range names {
		p := fmt.Sprintf("%s[%s]", joinPath(path, "typed_per_filter_config"), name)
		a, optional := m[name], false
		if a.GetTypeUrl() == filterConfigURL {
			var fc routev3.FilterConfig
			if err := a.UnmarshalTo(&fc); err != nil {
				return nil, config.At(p, err)
			}
			if fc.GetDisabled() {
				return nil, config.At(p+".disabled", errors.New("disabling a filter per route is not supported yet"))
			}
			a, optional = fc.GetConfig(), fc.GetIsOptional()
			p += ".config"
		}
		if _, ok := config.ByTypeURL(config.HTTPPerRoute, a.GetTypeUrl()); !ok {
			if optional {
				continue
			}
			return nil, config.At(p, fmt.Errorf("no compiled-in HTTP filter takes per-route config of type %q", a.GetTypeUrl()))
		}
		msg, err := a.UnmarshalNew()
		if err != nil {
			return nil, config.At(p, err)
		}
		if v, ok := msg.(interface{ ValidateAll() error }); ok {
			if errs := config.ValidationErrors(v.ValidateAll()); len(errs) > 0 {
				return nil, config.At(p, config.Join(errs))
			}
		}
		out[name] = msg
	}
	return out, nil
}

// mergeFilters overlays the more specific per-filter configs on the less
// specific ones, by filter name.
func mergeFilters(base, over map[string]proto.Message) map[string]proto.Message {
	if len(over) == 0 {
		return base
	}
	out := make(map[string]proto.Message, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}
