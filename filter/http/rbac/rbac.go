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
	"sync"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	engine "github.com/straitproxy/strait/rbac"
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
			return &engine.Rules{}, nil // no checks on this route
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

func compile(m *rbacv3.RBAC) (*engine.Rules, error) {
	return engine.CompileRules(m.GetRules(), m.GetShadowRules())
}

type factory struct {
	r *engine.Rules
	c *engine.Counters
	// resultKey and policyKey are the shadow result's metadata keys
	// (shadow_rules_stat_prefix + Envoy's names).
	resultKey, policyKey string
}

// metadataNS is the dynamic metadata namespace of the filter's results.
const metadataNS = "envoy.filters.http.rbac"

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
	return &factory{r: r, c: engine.NewCounters(sc, m.GetRulesStatPrefix(), m.GetShadowRulesStatPrefix()), resultKey: m.GetShadowRulesStatPrefix() + "shadow_engine_result",
		policyKey: m.GetShadowRulesStatPrefix() + "shadow_effective_policy_id"}, nil
}

// New implements filter.HTTPFactory: the filter keeps no per-stream
// state.
func (f *factory) New() filter.StreamFilter { return f }

// DecodeHeaders evaluates the rules.
func (f *factory) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	r := f.r
	if pr, ok := cb.PerRoute().(*engine.Rules); ok {
		r = pr
	}
	if r.Enforced == nil && r.Shadow == nil {
		return filter.Continue
	}
	si := cb.Info()
	// (A pooled request: the rules' interface calls would move one to
	// the heap per request.)
	req := reqPool.Get().(*engine.Request)
	*req = engine.ConnRequest(si.Conn)
	req.Headers, req.Path = h, h.Path()
	if si.ClientAddr.IsValid() {
		req.Remote = si.ClientAddr
	}
	if done, allowed, policy := r.CountShadow(req, f.c); done {
		// As Envoy's RBAC filter, the shadow result in the request's
		// dynamic metadata (what Istio's dry-run trace tags read).
		res := "denied"
		if allowed {
			res = "allowed"
		}
		si.SetMetadata(metadataNS, f.resultKey, res)
		if policy != "" {
			si.SetMetadata(metadataNS, f.policyKey, policy)
		}
	}
	ok, policy := r.Enforce(req, f.c, true)
	*req = engine.Request{}
	reqPool.Put(req)
	if !ok {
		si.ResponseCodeDetails = engine.DeniedDetails(policy)
		cb.SendLocalReply(403, "RBAC: access denied", nil)
		return filter.Stop
	}
	return filter.Continue
}

var reqPool = sync.Pool{New: func() any { return new(engine.Request) }}
