// Package rbac is the envoy.config.rbac.v3 policy language, compiled once
// and evaluated without allocating, for the HTTP and the network RBAC
// filters. A policy matches when any of its permissions and any of its
// principals match; an ALLOW engine allows a request some policy
// matches, a DENY engine denies it, a LOG engine allows everything and
// reports the match.
package rbac

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
)

// Request is what a policy is evaluated against. Headers is nil for a
// network (L4) check: header and path rules never match then.
type Request struct {
	Headers *protocol.Headers
	// Path is the request's :path (its query is ignored by url_path).
	Path []byte
	// Source is the downstream's address (direct_remote_ip); Remote is
	// the original client's as x-forwarded-for told (remote_ip; the
	// direct one when not known).
	Source netip.Addr
	Remote netip.Addr
	Dest   netip.AddrPort
	// SNI is the requested server name (read from sniConn, when set,
	// the first time a rule asks).
	SNI     string
	sniConn *network.Conn
	// Peer is the peer's identity (nil or not Present: no certificate).
	Peer *network.PeerIdentity

	// memo keeps the header values rules looked up, by name: policies
	// often test the same header, and a lookup scans every field.
	memo  [6]headerMemo
	memoN int
}

type headerMemo struct {
	name  string
	v     []byte
	found bool
}

// header is the value of the request header name (router.HeaderValue),
// looked up once per request.
func (r *Request) header(name string) ([]byte, bool) {
	for i := 0; i < r.memoN; i++ {
		if m := &r.memo[i]; m.name == name {
			return m.v, m.found
		}
	}
	v, found := router.HeaderValue(r.Headers, name)
	if r.memoN < len(r.memo) {
		r.memo[r.memoN] = headerMemo{name, v, found}
		r.memoN++
	}
	return v, found
}

// serverName is the SNI, from the connection on first use.
func (r *Request) serverName() string {
	if c := r.sniConn; c != nil {
		r.sniConn = nil
		if cs, ok := c.TLSState(); ok {
			r.SNI = cs.ServerName
		} else if in := c.Info(); in != nil {
			r.SNI = in.ServerName
		}
	}
	return r.SNI
}

// Action is an engine's action.
type Action = rbacv3.RBAC_Action

// Engine is a compiled RBAC config.
type Engine struct {
	action   Action
	policies []policy
}

type policy struct {
	name  string
	perms []rule
	ids   []rule
}

// rule is a compiled permission or principal.
type rule interface {
	match(r *Request) bool
}

// Compile compiles an RBAC config; errors name the field's path.
func Compile(cfg *rbacv3.RBAC) (*Engine, error) {
	if cfg.GetAuditLoggingOptions() != nil {
		return nil, config.At("audit_logging_options", errors.New("not supported yet"))
	}
	e := &Engine{action: cfg.GetAction()}
	names := make([]string, 0, len(cfg.GetPolicies()))
	for n := range cfg.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names) // a deterministic first match
	for _, n := range names {
		p := cfg.GetPolicies()[n]
		path := fmt.Sprintf("policies[%s]", n)
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			return nil, config.At(path+".condition", errors.New("CEL conditions are not supported yet"))
		}
		pol := policy{name: n}
		for i, perm := range p.GetPermissions() {
			r, err := compilePermission(perm, fmt.Sprintf("%s.permissions[%d]", path, i))
			if err != nil {
				return nil, err
			}
			pol.perms = append(pol.perms, r)
		}
		for i, id := range p.GetPrincipals() {
			r, err := compilePrincipal(id, fmt.Sprintf("%s.principals[%d]", path, i))
			if err != nil {
				return nil, err
			}
			pol.ids = append(pol.ids, r)
		}
		if len(pol.perms) == 0 || len(pol.ids) == 0 {
			return nil, config.At(path, errors.New("a policy needs at least one permission and one principal"))
		}
		e.policies = append(e.policies, pol)
	}
	return e, nil
}

// Action is the engine's action.
func (e *Engine) Action() Action { return e.action }

// Match returns the name of the first policy (by name) that matches r,
// and whether one does.
func (e *Engine) Match(r *Request) (string, bool) {
	for i := range e.policies {
		p := &e.policies[i]
		if anyOf(p.perms, r) && anyOf(p.ids, r) {
			return p.name, true
		}
	}
	return "", false
}

// Allowed applies the engine's action: ALLOW allows what a policy
// matches, DENY denies it, LOG allows everything. policy is the matched
// policy ("" for none).
func (e *Engine) Allowed(r *Request) (allowed bool, policy string) {
	name, matched := e.Match(r)
	switch e.action {
	case rbacv3.RBAC_ALLOW:
		return matched, name
	case rbacv3.RBAC_DENY:
		return !matched, name
	}
	return true, name
}

func anyOf(rs []rule, r *Request) bool {
	for _, x := range rs {
		if x.match(r) {
			return true
		}
	}
	return false
}

// The rules.

type anyRule struct{}

func (anyRule) match(*Request) bool { return true }

type andRule []rule

func (a andRule) match(r *Request) bool {
	for _, x := range a {
		if !x.match(r) {
			return false
		}
	}
	return true
}

type orRule []rule

func (o orRule) match(r *Request) bool { return anyOf(o, r) }

type notRule struct{ r rule }

func (n notRule) match(r *Request) bool { return !n.r.match(r) }

type headerRule struct{ m *router.HeaderMatcher }

func (h headerRule) match(r *Request) bool {
	if r.Headers == nil {
		return false
	}
	v, found := r.header(h.m.Name())
	return h.m.MatchesValue(v, found)
}

type pathRule struct{ m *router.StringMatcher }

func (p pathRule) match(r *Request) bool {
	return r.Headers != nil && p.m.MatchBytes(router.PathOnly(r.Path))
}

type destIPRule struct{ p netip.Prefix }

func (d destIPRule) match(r *Request) bool { return d.p.Contains(r.Dest.Addr().Unmap()) }

type destPortRule uint16

func (d destPortRule) match(r *Request) bool { return r.Dest.Port() == uint16(d) }

type portRangeRule struct{ lo, hi int32 } // [lo, hi)

func (p portRangeRule) match(r *Request) bool {
	port := int32(r.Dest.Port())
	return port >= p.lo && port < p.hi
}

type sniRule struct{ m *router.StringMatcher }

func (s sniRule) match(r *Request) bool { return s.m.Match(r.serverName()) }

type sourceRule struct {
	p      netip.Prefix
	remote bool // remote_ip (x-forwarded-for aware), else direct_remote_ip
}

func (s sourceRule) match(r *Request) bool {
	a := r.Source
	if s.remote && r.Remote.IsValid() {
		a = r.Remote
	}
	return s.p.Contains(a.Unmap())
}

// authRule is authenticated: a peer certificate, and when a name matcher
// is given, one of its URI SANs, DNS SANs, or its subject (RFC 2253)
// matching it, in that order (as Envoy).
type authRule struct{ m *router.StringMatcher }

func (a authRule) match(r *Request) bool {
	p := r.Peer
	if p == nil || !p.Present {
		return false
	}
	if a.m == nil {
		return true
	}
	for _, u := range p.URIs {
		if a.m.Match(u) {
			return true
		}
	}
	for _, d := range p.DNSNames {
		if a.m.Match(d) {
			return true
		}
	}
	return a.m.Match(p.Subject)
}

func compilePermission(p *rbacv3.Permission, path string) (rule, error) {
	switch x := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !x.Any {
			return nil, config.At(path+".any", errors.New("must be true"))
		}
		return anyRule{}, nil
	case *rbacv3.Permission_AndRules:
		rs, err := compilePermissions(x.AndRules.GetRules(), path+".and_rules.rules")
		return andRule(rs), err
	case *rbacv3.Permission_OrRules:
		rs, err := compilePermissions(x.OrRules.GetRules(), path+".or_rules.rules")
		return orRule(rs), err
	case *rbacv3.Permission_NotRule:
		r, err := compilePermission(x.NotRule, path+".not_rule")
		return notRule{r}, err
	case *rbacv3.Permission_Header:
		m, err := router.CompileHeaderMatcher(x.Header, path+".header")
		return headerRule{m}, err
	case *rbacv3.Permission_UrlPath:
		m, err := router.CompileStringMatcher(x.UrlPath.GetPath(), path+".url_path.path")
		return pathRule{m}, err
	case *rbacv3.Permission_DestinationIp:
		pf, err := cidr(x.DestinationIp, path+".destination_ip")
		return destIPRule{pf}, err
	case *rbacv3.Permission_DestinationPort:
		if x.DestinationPort > 65535 {
			return nil, config.At(path+".destination_port", errors.New("must be at most 65535"))
		}
		return destPortRule(x.DestinationPort), nil
	case *rbacv3.Permission_DestinationPortRange:
		lo, hi := x.DestinationPortRange.GetStart(), x.DestinationPortRange.GetEnd()
		if lo < 0 || hi > 65536 || lo >= hi {
			return nil, config.At(path+".destination_port_range", fmt.Errorf("[%d, %d) is not a port range", lo, hi))
		}
		return portRangeRule{lo, hi}, nil
	case *rbacv3.Permission_RequestedServerName:
		m, err := router.CompileStringMatcher(x.RequestedServerName, path+".requested_server_name")
		return sniRule{m}, err
	case nil:
		return nil, config.At(path, errors.New("a rule is required"))
	}
	return nil, config.At(path, fmt.Errorf("%s is not supported yet", ruleName(p.ProtoReflect())))
}

func compilePermissions(ps []*rbacv3.Permission, path string) ([]rule, error) {
	if len(ps) == 0 {
		return nil, config.At(path, errors.New("at least one rule"))
	}
	out := make([]rule, len(ps))
	for i, p := range ps {
		r, err := compilePermission(p, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func compilePrincipal(p *rbacv3.Principal, path string) (rule, error) {
	switch x := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !x.Any {
			return nil, config.At(path+".any", errors.New("must be true"))
		}
		return anyRule{}, nil
	case *rbacv3.Principal_AndIds:
		rs, err := compilePrincipals(x.AndIds.GetIds(), path+".and_ids.ids")
		return andRule(rs), err
	case *rbacv3.Principal_OrIds:
		rs, err := compilePrincipals(x.OrIds.GetIds(), path+".or_ids.ids")
		return orRule(rs), err
	case *rbacv3.Principal_NotId:
		r, err := compilePrincipal(x.NotId, path+".not_id")
		return notRule{r}, err
	case *rbacv3.Principal_Authenticated_:
		if pn := x.Authenticated.GetPrincipalName(); pn != nil {
			m, err := router.CompileStringMatcher(pn, path+".authenticated.principal_name")
			return authRule{m}, err
		}
		return authRule{}, nil
	case *rbacv3.Principal_SourceIp: //nolint:staticcheck // deprecated: direct_remote_ip
		pf, err := cidr(x.SourceIp, path+".source_ip")
		return sourceRule{p: pf}, err
	case *rbacv3.Principal_DirectRemoteIp:
		pf, err := cidr(x.DirectRemoteIp, path+".direct_remote_ip")
		return sourceRule{p: pf}, err
	case *rbacv3.Principal_RemoteIp:
		pf, err := cidr(x.RemoteIp, path+".remote_ip")
		return sourceRule{p: pf, remote: true}, err
	case *rbacv3.Principal_Header:
		m, err := router.CompileHeaderMatcher(x.Header, path+".header")
		return headerRule{m}, err
	case *rbacv3.Principal_UrlPath:
		m, err := router.CompileStringMatcher(x.UrlPath.GetPath(), path+".url_path.path")
		return pathRule{m}, err
	case nil:
		return nil, config.At(path, errors.New("an identifier is required"))
	}
	return nil, config.At(path, fmt.Errorf("%s is not supported yet", ruleName(p.ProtoReflect())))
}

func compilePrincipals(ps []*rbacv3.Principal, path string) ([]rule, error) {
	if len(ps) == 0 {
		return nil, config.At(path, errors.New("at least one identifier"))
	}
	out := make([]rule, len(ps))
	for i, p := range ps {
		r, err := compilePrincipal(p, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// cidr parses a CidrRange into its masked prefix.
func cidr(c *corev3.CidrRange, path string) (netip.Prefix, error) {
	a, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, config.At(path+".address_prefix", fmt.Errorf("%q is not an IP address", c.GetAddressPrefix()))
	}
	a = a.Unmap()
	bits := int(c.GetPrefixLen().GetValue())
	if c.GetPrefixLen() == nil {
		bits = a.BitLen()
	}
	if bits > a.BitLen() {
		return netip.Prefix{}, config.At(path+".prefix_len", fmt.Errorf("%d is longer than the address", bits))
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// ConnRequest is what the policies see of a connection: its addresses
// (Remote is the peer's: at L4 there is no x-forwarded-for), the SNI it
// asked for, and its peer certificate.
func ConnRequest(c *network.Conn) Request {
	r := Request{Source: AddrPort(c.RemoteAddr()).Addr(), Dest: AddrPort(c.LocalAddr()), Peer: c.Peer(), sniConn: c}
	r.Remote = r.Source
	return r
}

// AddrPort is a net.Addr as an AddrPort (IPv4 unmapped; zero when it is
// not an IP address).
func AddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return netip.AddrPortFrom(ip.Unmap(), uint16(ta.Port))
		}
	}
	if a == nil {
		return netip.AddrPort{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
