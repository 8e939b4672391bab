package dubboproxy

import (
	"encoding/json"
	"errors"
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/straitproxy/strait/config"
)

// Mirroring Dubbo calls. Envoy's Dubbo routes have no mirror policy, so
// Strait takes one as a dubbo_filters entry of its own, named
// strait.filters.dubbo.mirror, whose config is a TypedStruct of
// MirrorTypeURL: request_mirror_policies (Envoy's RequestMirrorPolicy, as
// in HTTP routes) and, optionally, route_configs (the names of the route
// configurations they are for). The README shows one.
//
// It is not a stream filter: its policies are added to the routes of the
// route configurations it names (every one when it names none), and the
// engine mirrors a call as it mirrors an HTTP request: fire and forget, a
// copy of the call's frame sent on the shadow cluster's own multiplexed
// connections with an id of their own, its reply read and dropped.
const (
	MirrorName    = "strait.filters.dubbo.mirror"
	MirrorTypeURL = "type.googleapis.com/strait.filters.dubbo.mirror.v1.Mirror"
)

// mirrorSpec is one mirror entry.
type mirrorSpec struct {
	routeConfigs map[string]bool // nil: every route configuration
	policies     []*routev3.RouteAction_RequestMirrorPolicy
}

// mirrorsOf reads the mirror entries of dubbo_filters; names are the
// route configurations' names, to check route_configs against.
func mirrorsOf(m *dubbov3.DubboProxy, rcs []*dubbov3.RouteConfiguration) ([]*mirrorSpec, error) {
	known := map[string]bool{}
	for _, rc := range rcs {
		known[rc.GetName()] = true
	}
	var out []*mirrorSpec
	for i, f := range m.GetDubboFilters() {
		if f.GetName() != MirrorName {
			continue
		}
		path := fmt.Sprintf("dubbo_filters[%d].config", i)
		ms, err := decodeMirror(f, known)
		if err != nil {
			return nil, config.At(path, err)
		}
		out = append(out, ms)
	}
	return out, nil
}

func decodeMirror(f *dubbov3.DubboFilter, known map[string]bool) (*mirrorSpec, error) {
	if f.GetConfig() == nil {
		return nil, errors.New("required")
	}
	url, value, err := config.UnwrapTypedStruct(f.GetConfig())
	if err != nil {
		return nil, err
	}
	if url != MirrorTypeURL {
		return nil, config.At("type_url", fmt.Errorf("want %s, got %s", MirrorTypeURL, url))
	}
	var v struct {
		RouteConfigs []string          `json:"route_configs"`
		Policies     []json.RawMessage `json:"request_mirror_policies"`
	}
	if err := config.DecodeStruct(value, &v); err != nil {
		return nil, config.At("value", err)
	}
	if len(v.Policies) == 0 {
		return nil, config.At("value.request_mirror_policies", errors.New("at least one policy is required"))
	}
	ms := &mirrorSpec{}
	for i, raw := range v.Policies {
		p := &routev3.RouteAction_RequestMirrorPolicy{}
		path := fmt.Sprintf("value.request_mirror_policies[%d]", i)
		if err := protojson.Unmarshal(raw, p); err != nil {
			return nil, config.At(path, err)
		}
		if errs := config.ValidationErrors(p.ValidateAll()); len(errs) > 0 {
			return nil, config.At(path, config.Join(errs))
		}
		ms.policies = append(ms.policies, p)
	}
	for i, name := range v.RouteConfigs {
		if !known[name] {
			return nil, config.At(fmt.Sprintf("value.route_configs[%d]", i), fmt.Errorf("no route configuration is named %q", name))
		}
		if ms.routeConfigs == nil {
			ms.routeConfigs = map[string]bool{}
		}
		ms.routeConfigs[name] = true
	}
	return ms, nil
}

// mirrorsFor returns the policies for the routes of the route
// configuration named name.
func mirrorsFor(specs []*mirrorSpec, name string) []*routev3.RouteAction_RequestMirrorPolicy {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	for _, ms := range specs {
		if ms.routeConfigs == nil || ms.routeConfigs[name] {
			out = append(out, ms.policies...)
		}
	}
	return out
}
