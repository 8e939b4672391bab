// Package rbac is envoy.filters.network.rbac: the envoy.config.rbac.v3
// policy language (package rbac at the root) on a connection: its
// addresses, ports, SNI and peer certificate (header and path rules never
// match at L4). A denied connection is closed before its first byte goes
// on (ONE_TIME_ON_FIRST_BYTE, the default) or when any data is denied
// (CONTINUOUS); delay_deny holds the denied connection that long first.
// Stats under <stat_prefix>.rbac.: allowed, denied, and
// <shadow_rules_stat_prefix>shadow_allowed, shadow_denied.
package rbac

import (
	"errors"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	engine "github.com/straitproxy/strait/rbac"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.network.rbac"

func init() {
	filter.RegisterNetwork(Name, &rbacv3.RBAC{}, func(bc *filter.BuildContext, m proto.Message) (filter.NetworkFactory, error) {
		f, err := build(bc, m.(*rbacv3.RBAC))
		if err != nil {
			return nil, err
		}
		return filter.ReadFilterFactory(f), nil
	})
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.network.rbac.v3.RBAC": `rules shadow_rules shadow_rules_stat_prefix stat_prefix enforcement_type delay_deny`,
})

type factory struct {
	r          *engine.Rules
	c          *engine.Counters
	continuous bool
	delay      time.Duration
}

func build(bc *filter.BuildContext, m *rbacv3.RBAC) (*factory, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	if m.GetRules() == nil && m.GetShadowRules() == nil {
		return nil, errors.New("rules or shadow_rules is required")
	}
	r, err := engine.CompileRules(m.GetRules(), m.GetShadowRules())
	if err != nil {
		return nil, err
	}
	sc := bc.Stats.Scope(m.GetStatPrefix()+"rbac", "", "")
	return &factory{r: r, c: engine.NewCounters(sc, "", m.GetShadowRulesStatPrefix()),
		continuous: m.GetEnforcementType() == rbacv3.RBAC_CONTINUOUS, delay: m.GetDelayDeny().AsDuration()}, nil
}

// NewReadFilter implements filter.NetworkReadFactory.
func (f *factory) NewReadFilter(*network.Conn) (filter.ReadFilter, error) { return &conn{f: f}, nil }

// conn is one connection's check.
type conn struct {
	f       *factory
	decided bool
	denied  bool
	timer   *time.Timer
}

func (c *conn) OnNewConnection(filter.ConnCallbacks) filter.Status { return filter.Continue }

func (c *conn) OnData(cb filter.ConnCallbacks, data []byte, _ bool) (int, filter.Status) {
	if c.denied {
		return 0, filter.Stop
	}
	if c.decided && !c.f.continuous {
		return len(data), filter.Continue
	}
	first := !c.decided
	c.decided = true
	f := c.f
	req := engine.ConnRequest(cb.Conn())
	if first {
		f.r.CountShadow(&req, f.c) // (no request to carry dynamic metadata)
	}
	ok, policy := f.r.Enforce(&req, f.c, first)
	if ok {
		return len(data), filter.Continue
	}
	cb.Conn().SetTerminationDetails(engine.DeniedDetails(policy))
	if !first {
		f.c.Denied.Inc()
	}
	c.denied = true
	if f.delay > 0 {
		// Hold the connection, then close it (a client retrying at once
		// meets the delay too).
		c.timer = time.AfterFunc(f.delay, func() { cb.Close(false) })
		return 0, filter.Stop
	}
	cb.Close(false)
	return 0, filter.Stop
}

// OnDestroy stops a pending delayed close.
func (c *conn) OnDestroy() {
	if c.timer != nil {
		c.timer.Stop()
	}
}
