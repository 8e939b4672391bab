// Package rbac is envoy.filters.http.rbac: the envoy.config.rbac.v3
// policy language (package rbac at the root) on each request's headers,
// path, addresses, SNI and the peer certificate. A denied request gets
// 403 "RBAC: access denied"; shadow rules are evaluated and counted
// without effect. A route's RBACPerRoute replaces the rules (no rbac in
// it: no checks on that route).
//
// Stats, under http.<stat_prefix>.rbac.: <rules_stat_prefix>allowed,
// <rules_stat_prefix>denied, <shadow_rules_stat_prefix>shadow_allowed,
// <shadow_rules_stat_prefix>shadow_denied.
package rbac

import (
	"errors"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	engine "github.com/straitproxy/strait/rbac"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.http.rbac"

func init() {
	filter.RegisterHTTP(Name, &rbacv3.RBAC{}, func(bc *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		return build(bc, m.(*rbacv3.RBAC))
	})
	filter.RegisterHTTPPerRoute(Name, &rbacv3.RBACPerRoute{}, func(m proto.Message) (any, error) {
		pr := m.(*rbacv3.RBACPerRoute)
		if pr.GetRbac() == nil {
			return &rules{}, nil // no checks on this route
		}
		if err := supported.Check(pr.GetRbac()); err != nil {
			return nil, config.At("rbac", err)
		}
		r, err := compile(pr.GetRbac())
		return r, config.At("rbac", err)
	})
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.http.rbac.v3.RBAC": `rules rules_stat_prefix shadow_rules shadow_rules_stat_prefix`,
})

// rules are the compiled engines (nil: none).
type rules struct {
	enforced, shadow *engine.Engine
}

func compile(m *rbacv3.RBAC) (*rules, error) {
	r := &rules{}
	var err error
	if m.GetRules() != nil {
		if r.enforced, err = engine.Compile(m.GetRules()); err != nil {
			return nil, config.At("rules", err)
		}
	}
	if m.GetShadowRules() != nil {
		if r.shadow, err = engine.Compile(m.GetShadowRules()); err != nil {
			return nil, config.At("shadow_rules", err)
		}
	}
	return r, nil
}

type factory struct {
	r                                          *rules
	allowed, denied, shadowAllowed, shadowDeny *stats.Counter
}

func build(bc *filter.BuildContext, m *rbacv3.RBAC) (*factory, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	if m.GetRules() == nil && m.GetShadowRules() == nil {
		return nil, errors.New("rules or shadow_rules is required")
	}
	r, err := compile(m)
	if err != nil {
		return nil, err
	}
	sc := bc.Stats.Scope("http", "envoy_http_conn_manager_prefix", bc.StatPrefix).Scope("rbac", "", "")
	p, sp := m.GetRulesStatPrefix(), m.GetShadowRulesStatPrefix()
	return &factory{r: r, allowed: sc.Counter(p + "allowed"), denied: sc.Counter(p + "denied"),
		shadowAllowed: sc.Counter(sp + "shadow_allowed"), shadowDeny: sc.Counter(sp + "shadow_denied")}, nil
}

// New implements filter.HTTPFactory: the filter keeps no per-stream
// state.
func (f *factory) New() filter.StreamFilter { return f }

// DecodeHeaders evaluates the rules.
func (f *factory) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	r := f.r
	if pr, ok := cb.PerRoute().(*rules); ok {
		r = pr
	}
	if r.enforced == nil && r.shadow == nil {
		return filter.Continue
	}
	si := cb.Info()
	req := engine.ConnRequest(si.Conn)
	req.Headers, req.Path = h, h.Path()
	if si.ClientAddr.IsValid() {
		req.Remote = si.ClientAddr
	}
	if r.shadow != nil {
		if ok, _ := r.shadow.Allowed(&req); ok {
			f.shadowAllowed.Inc()
		} else {
			f.shadowDeny.Inc()
		}
	}
	if r.enforced == nil {
		return filter.Continue
	}
	if ok, _ := r.enforced.Allowed(&req); !ok {
		f.denied.Inc()
		cb.SendLocalReply(403, "RBAC: access denied", nil)
		return filter.Stop
	}
	f.allowed.Inc()
	return filter.Continue
}
