package rbac

import (
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
)

// Rules are a filter's enforced rules and shadow rules, compiled (nil:
// none), as the HTTP and network RBAC filters both take them.
type Rules struct {
	Enforced, Shadow *Engine
}

// CompileRules compiles rules and shadow rules; errors name the field
// ("rules", "shadow_rules").
func CompileRules(rules, shadow *rbacv3.RBAC) (*Rules, error) {
	r := &Rules{}
	var err error
	if rules != nil {
		if r.Enforced, err = Compile(rules); err != nil {
			return nil, config.At("rules", err)
		}
	}
	if shadow != nil {
		if r.Shadow, err = Compile(shadow); err != nil {
			return nil, config.At("shadow_rules", err)
		}
	}
	return r, nil
}

// Counters are the RBAC filters' stats: <prefix>allowed, <prefix>denied,
// <shadowPrefix>shadow_allowed, <shadowPrefix>shadow_denied in sc.
type Counters struct {
	Allowed, Denied, ShadowAllowed, ShadowDenied *stats.Counter
}

// NewCounters makes the counters in sc.
func NewCounters(sc *stats.Scope, prefix, shadowPrefix string) *Counters {
	return &Counters{Allowed: sc.Counter(prefix + "allowed"), Denied: sc.Counter(prefix + "denied"),
		ShadowAllowed: sc.Counter(shadowPrefix + "shadow_allowed"), ShadowDenied: sc.Counter(shadowPrefix + "shadow_denied")}
}

// CountShadow evaluates the shadow rules, if any, and counts the result;
// it returns the result (evaluated false: no shadow rules) and the
// policy that matched ("" for none).
func (r *Rules) CountShadow(req *Request, c *Counters) (evaluated, ok bool, policy string) {
	if r.Shadow == nil {
		return false, false, ""
	}
	ok, policy = r.Shadow.Allowed(req)
	if ok {
		c.ShadowAllowed.Inc()
	} else {
		c.ShadowDenied.Inc()
	}
	return true, ok, policy
}

// Enforce evaluates the enforced rules (none: allowed, uncounted); count
// says whether the decision is counted. policy is the policy that
// matched ("" for none).
func (r *Rules) Enforce(req *Request, c *Counters, count bool) (ok bool, policy string) {
	if r.Enforced == nil {
		return true, ""
	}
	ok, policy = r.Enforced.Allowed(req)
	if count {
		if ok {
			c.Allowed.Inc()
		} else {
			c.Denied.Inc()
		}
	}
	return ok, policy
}

// DeniedDetails is Envoy's response code (or connection termination)
// details of a denial: rbac_access_denied_matched_policy[NAME], [none]
// when no policy matched.
func DeniedDetails(policy string) string {
	if policy == "" {
		policy = "none"
	}
	return "rbac_access_denied_matched_policy[" + policy + "]"
}
