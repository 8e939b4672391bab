// Package cors is envoy.filters.http.cors: Cross-Origin Resource Sharing
// (the Fetch standard's CORS protocol) by the policies routes give it.
//
// The filter's own config (Cors) has no fields; each route, virtual host
// or route configuration gives a CorsPolicy in typed_per_filter_config,
// and each field is read from the most specific level that sets it
// (filter_enabled and shadow_enabled from the most specific policy, as
// Envoy). For a request with a non-empty Origin on a route with a
// policy:
//
//   - an origin allow_origin_string_match does not match counts
//     cors.origin_invalid, a match counts cors.origin_valid;
//   - a preflight (OPTIONS with Access-Control-Request-Method) is answered
//     here, 200 without body, with Access-Control-Allow-Origin (the
//     origin, when allowed), -Allow-Credentials, -Allow-Methods and
//     -Allow-Headers ("*" echoes the request's), -Max-Age and, when asked
//     for and allowed, -Allow-Private-Network; a preflight from an origin
//     not allowed goes upstream instead when
//     forward_not_matching_preflights (the default);
//   - any other request goes upstream, and its response gets
//     Access-Control-Allow-Origin (the origin), -Allow-Credentials and
//     -Expose-Headers when the origin is allowed.
//
// With shadow_enabled and not filter_enabled only the stats are counted.
package cors

import (
	"math/rand/v2"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Name is the filter's name.
const Name = "envoy.filters.http.cors"

func init() {
	filter.RegisterHTTP(Name, &corsv3.Cors{}, func(bc *filter.BuildContext, _ proto.Message) (filter.HTTPFactory, error) {
		rt := bc.Runtime
		if rt == nil {
			rt = config.NewRuntime()
		}
		sc := bc.Stats.Scope("http", "envoy_http_conn_manager_prefix", bc.StatPrefix)
		return &factory{rt: rt, valid: sc.Counter("cors.origin_valid"), invalid: sc.Counter("cors.origin_invalid")}, nil
	})
	filter.RegisterHTTPPerRoute(Name, &corsv3.CorsPolicy{}, func(m proto.Message) (any, error) {
		return compile(m.(*corsv3.CorsPolicy))
	})
}

// policy is a compiled CorsPolicy; an empty string or a nil flag is a
// field the level left unset, which a merge fills.
type policy struct {
	origins                                 []*router.StringMatcher
	methods, headers, expose, maxAge        string
	credentials, privateNet, forwardNoMatch *bool
	enabled, shadow                         *corev3.RuntimeFractionalPercent
}

// optBool is a BoolValue that may be unset (nil).
func optBool(v *wrapperspb.BoolValue) *bool {
	if v == nil {
		return nil
	}
	b := v.GetValue()
	return &b
}

func compile(m *corsv3.CorsPolicy) (*policy, error) {
	p := &policy{methods: m.GetAllowMethods(), headers: m.GetAllowHeaders(), expose: m.GetExposeHeaders(),
		maxAge: m.GetMaxAge(), enabled: m.GetFilterEnabled(), shadow: m.GetShadowEnabled(),
		credentials: optBool(m.GetAllowCredentials()), privateNet: optBool(m.GetAllowPrivateNetworkAccess()),
		forwardNoMatch: optBool(m.GetForwardNotMatchingPreflights())}
	for i, sm := range m.GetAllowOriginStringMatch() {
		c, err := router.CompileStringMatcher(sm, "allow_origin_string_match["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		p.origins = append(p.origins, c)
	}
	return p, nil
}

// MergeOver implements router.Merger: each field this level leaves unset
// comes from the less specific policy; enabling stays this level's.
func (p *policy) MergeOver(less any) any {
	l, ok := less.(*policy)
	if !ok {
		return p
	}
	m := *p
	if len(m.origins) == 0 {
		m.origins = l.origins
	}
	for _, f := range []struct{ dst, src *string }{{&m.methods, &l.methods}, {&m.headers, &l.headers},
		{&m.expose, &l.expose}, {&m.maxAge, &l.maxAge}} {
		if *f.dst == "" {
			*f.dst = *f.src
		}
	}
	for _, f := range []struct{ dst, src **bool }{{&m.credentials, &l.credentials}, {&m.privateNet, &l.privateNet},
		{&m.forwardNoMatch, &l.forwardNoMatch}} {
		if *f.dst == nil {
			*f.dst = *f.src
		}
	}
	return &m
}

func (p *policy) originAllowed(origin []byte) bool {
	for _, m := range p.origins {
		if m.Match("*") || m.MatchBytes(origin) {
			return true
		}
	}
	return false
}

func is(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

type factory struct {
	rt             *config.Runtime
	valid, invalid *stats.Counter
}

// on reports a RuntimeFractionalPercent (unset: def).
func (f *factory) on(r *corev3.RuntimeFractionalPercent, def bool) bool {
	if r == nil {
		return def
	}
	return f.rt.Snapshot().FeatureEnabled(r.GetRuntimeKey(), r.GetDefaultValue(), rand.Uint64())
}

func (f *factory) New() filter.StreamFilter { return &stream{f: f} }

// stream is one request's CORS state: the policy and the origin it
// allowed, for the response.
type stream struct {
	f      *factory
	p      *policy
	origin string
}

func (s *stream) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	p, _ := cb.PerRoute().(*policy)
	if p == nil {
		return filter.Continue
	}
	enabled := s.f.on(p.enabled, true)
	if !enabled && !s.f.on(p.shadow, false) {
		return filter.Continue
	}
	origin, _ := h.Get("origin")
	if len(origin) == 0 {
		return filter.Continue
	}
	allowed := p.originAllowed(origin)
	if allowed {
		s.f.valid.Inc()
	} else {
		s.f.invalid.Inc()
	}
	if !enabled {
		return filter.Continue
	}
	s.p = p
	if allowed {
		s.origin = string(origin)
	}
	reqMethod, _ := h.Get("access-control-request-method")
	if string(h.Method()) != "OPTIONS" || len(reqMethod) == 0 {
		return filter.Continue
	}
	if !allowed && is(p.forwardNoMatch, true) {
		return filter.Continue
	}
	reqHeaders, _ := h.Get("access-control-request-headers")
	privateNet, _ := h.Get("access-control-request-private-network")
	reqMethodS, reqHeadersS, askPrivate := string(reqMethod), string(reqHeaders), string(privateNet) == "true"
	cb.Info().ResponseCodeDetails = "cors_response"
	cb.SendLocalReply(200, "", func(r *protocol.Headers) {
		if allowed {
			r.Set("access-control-allow-origin", s.origin)
		}
		if is(p.credentials, false) {
			r.Set("access-control-allow-credentials", "true")
		}
		switch p.methods {
		case "":
		case "*":
			r.Set("access-control-allow-methods", reqMethodS)
		default:
			r.Set("access-control-allow-methods", p.methods)
		}
		switch p.headers {
		case "":
		case "*":
			r.Set("access-control-allow-headers", reqHeadersS)
		default:
			r.Set("access-control-allow-headers", p.headers)
		}
		if p.maxAge != "" {
			r.Set("access-control-max-age", p.maxAge)
		}
		if is(p.privateNet, false) && askPrivate {
			r.Set("access-control-allow-private-network", "true")
		}
	})
	return filter.Stop
}

func (s *stream) EncodeHeaders(_ filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	if s.p == nil || s.origin == "" {
		return filter.Continue
	}
	h.Set("access-control-allow-origin", s.origin)
	if is(s.p.credentials, false) {
		h.Set("access-control-allow-credentials", "true")
	}
	if s.p.expose != "" {
		h.Set("access-control-expose-headers", s.p.expose)
	}
	return filter.Continue
}
