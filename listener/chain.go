package listener

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/transport"
)

// chain is a built filter chain with its match.
type chain struct {
	name     string
	ports    uint32 // destination_port, 0 = any
	dst, src []netip.Prefix
	srcPorts map[uint32]bool
	// names are the exact server_names; wild the "*." ones, kept as
	// their suffix (".example.com").
	names     map[string]bool
	wild      []string
	transport string          // transport_protocol ("" = any)
	alpn      map[string]bool // application_protocols
	factories []filter.NetworkFactory
	// ts is the transport socket (nil: raw_buffer).
	ts transport.Downstream
}

func buildChain(bc *filter.BuildContext, fc *listenerv3.FilterChain, lsc *stats.Scope) (*chain, error) {
	c := &chain{name: fc.GetName()}
	if err := c.buildMatch(fc.GetFilterChainMatch()); err != nil {
		return nil, config.At("filter_chain_match", err)
	}
	tbc := &transport.BuildContext{Log: bc.Log, Secrets: bc.Secrets, Stats: lsc}
	if d := fc.GetTransportSocketConnectTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, config.At("transport_socket_connect_timeout", fmt.Errorf("invalid duration"))
		}
		tbc.HandshakeTimeout = d.AsDuration()
	}
	ts, err := transport.Build(tbc, fc.GetTransportSocket())
	if err != nil {
		return nil, config.At("transport_socket", err)
	}
	c.ts = ts
	fs := fc.GetFilters()
	if len(fs) == 0 {
		return nil, config.At("filters", fmt.Errorf("empty: a filter chain must end in a terminal filter (tcp_proxy, http_connection_manager)"))
	}
	for i, f := range fs {
		path := fmt.Sprintf("filters[%d]", i)
		fac, err := filter.BuildNetwork(bc, f.GetTypedConfig())
		if err != nil {
			return nil, config.At(path, fmt.Errorf("filter %q: %w", f.GetName(), err))
		}
		last := i == len(fs)-1
		switch {
		case fac.Terminal() && !last:
			return nil, config.At(path, fmt.Errorf("filter %q is terminal and must be last", f.GetName()))
		case !fac.Terminal() && last:
			return nil, config.At(path, fmt.Errorf("filter %q is not terminal: a filter chain must end in a terminal filter", f.GetName()))
		}
		c.factories = append(c.factories, fac)
	}
	return c, nil
}

func (c *chain) buildMatch(m *listenerv3.FilterChainMatch) error {
	if m == nil {
		return nil
	}
	for i, n := range m.GetServerNames() {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		switch {
		case strings.HasPrefix(n, "*.") && len(n) > 2 && !strings.Contains(n[2:], "*"):
			c.wild = append(c.wild, n[1:])
		case n != "" && !strings.Contains(n, "*"):
			if c.names == nil {
				c.names = map[string]bool{}
			}
			c.names[n] = true
		default:
			return config.At(fmt.Sprintf("server_names[%d]", i), fmt.Errorf("%q: a name, or \"*.\" and a domain", n))
		}
	}
	c.transport = m.GetTransportProtocol()
	for _, p := range m.GetApplicationProtocols() {
		if c.alpn == nil {
			c.alpn = map[string]bool{}
		}
		c.alpn[p] = true
	}
	c.ports = m.GetDestinationPort().GetValue()
	var err error
	if c.dst, err = prefixes(m.GetPrefixRanges()); err != nil {
		return config.At("prefix_ranges", err)
	}
	if c.src, err = prefixes(m.GetSourcePrefixRanges()); err != nil {
		return config.At("source_prefix_ranges", err)
	}
	for _, p := range m.GetSourcePorts() {
		if c.srcPorts == nil {
			c.srcPorts = map[uint32]bool{}
		}
		c.srcPorts[p] = true
	}
	return nil
}

// needsInspection reports whether the chain matches on what only
// listener filters learn.
func (c *chain) needsInspection() bool {
	return c.names != nil || c.wild != nil || c.transport != "" || c.alpn != nil
}

// keys lists the chain's match as one key per combination of its list
// criteria (Envoy refuses two chains that share one); ok is false when
// there are too many to list.
func (c *chain) keys() (out []string, ok bool) {
	out = []string{fmt.Sprintf("port=%d transport=%q", c.ports, c.transport)}
	cross := func(vals []string) bool {
		if len(vals) == 0 {
			return true
		}
		if len(out)*len(vals) > 1<<14 {
			return false
		}
		next := make([]string, 0, len(out)*len(vals))
		for _, o := range out {
			for _, v := range vals {
				next = append(next, o+" "+v)
			}
		}
		out = next
		return true
	}
	var names, alpn, dst, src, ports []string
	for n := range c.names {
		names = append(names, "sni="+n)
	}
	for _, w := range c.wild {
		names = append(names, "sni=*"+w)
	}
	for p := range c.alpn {
		alpn = append(alpn, "alpn="+p)
	}
	for _, p := range c.dst {
		dst = append(dst, "dst="+p.Masked().String())
	}
	for _, p := range c.src {
		src = append(src, "src="+p.Masked().String())
	}
	for p := range c.srcPorts {
		ports = append(ports, fmt.Sprintf("sport=%d", p))
	}
	for _, l := range [][]string{names, alpn, dst, src, ports} {
		sort.Strings(l)
		if !cross(l) {
			return nil, false
		}
	}
	return out, true
}

func prefixes(rs []*corev3.CidrRange) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range rs {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("[%d].address_prefix: %w", i, err)
		}
		bits := int(r.GetPrefixLen().GetValue())
		if r.GetPrefixLen() == nil {
			bits = a.BitLen()
		}
		p, err := a.Prefix(bits)
		if err != nil {
			return nil, fmt.Errorf("[%d].prefix_len: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// connKey is what a filter chain is matched on.
type connKey struct {
	local, remote *net.TCPAddr
	info          *network.ConnInfo // nil without listener filters
}

// The match levels in Envoy's order: destination port, destination IP,
// server name, transport protocol, application protocols, source IP,
// source port. Each rates a chain for a connection: -1 no match, 0 the
// chain does not ask, more is more specific.
var levels = [...]func(c *chain, k *connKey) int{
	func(c *chain, k *connKey) int { // destination_port
		switch {
		case c.ports == 0:
			return 0
		case k.local != nil && uint32(k.local.Port) == c.ports:
			return 1
		}
		return -1
	},
	func(c *chain, k *connKey) int { // prefix_ranges
		return prefixRank(c.dst, k.local)
	},
	func(c *chain, k *connKey) int { // server_names
		if c.names == nil && c.wild == nil {
			return 0
		}
		if k.info == nil || k.info.ServerName == "" {
			return -1
		}
		sni := k.info.ServerName
		if c.names[sni] {
			return 1 << 16
		}
		best := -1
		for _, w := range c.wild {
			if len(sni) > len(w) && strings.HasSuffix(sni, w) && len(w) > best {
				best = len(w)
			}
		}
		return best
	},
	func(c *chain, k *connKey) int { // transport_protocol
		if c.transport == "" {
			return 0
		}
		tp := "raw_buffer"
		if k.info != nil && k.info.TransportProtocol != "" {
			tp = k.info.TransportProtocol
		}
		if tp == c.transport {
			return 1
		}
		return -1
	},
	func(c *chain, k *connKey) int { // application_protocols
		if c.alpn == nil {
			return 0
		}
		if k.info != nil {
			for _, p := range k.info.ApplicationProtocols {
				if c.alpn[p] {
					return 1
				}
			}
		}
		return -1
	},
	func(c *chain, k *connKey) int { // source_prefix_ranges
		return prefixRank(c.src, k.remote)
	},
	func(c *chain, k *connKey) int { // source_ports
		switch {
		case c.srcPorts == nil:
			return 0
		case k.remote != nil && c.srcPorts[uint32(k.remote.Port)]:
			return 1
		}
		return -1
	},
}

// prefixRank rates an address against a chain's prefixes: the longest
// that contains it, plus one.
func prefixRank(ps []netip.Prefix, a *net.TCPAddr) int {
	if len(ps) == 0 {
		return 0
	}
	if b := longest(ps, a); b >= 0 {
		return b + 1
	}
	return -1
}

// matchChain picks a connection's filter chain as Envoy does: level by
// level, keep the chains that match most specifically (a chain that does
// not ask matches only when none that asks does); nil when a level leaves
// none. There is no going back: a connection whose most specific server
// name chain fails on transport protocol does not fall back to a less
// specific name.
func matchChain(chains []*chain, k *connKey) *chain {
	var arr [16]*chain
	cands := append(arr[:0], chains...)
	for _, rate := range levels {
		best, n := -1, 0
		for _, c := range cands {
			r := rate(c, k)
			if r > best {
				best, n = r, 0
			}
			if r == best && r >= 0 {
				cands[n] = c
				n++
			}
		}
		if best < 0 {
			return nil
		}
		cands = cands[:n]
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[0]
}

func longest(ps []netip.Prefix, a *net.TCPAddr) int {
	if a == nil {
		return -1
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return -1
	}
	ip = ip.Unmap()
	best := -1
	for _, p := range ps {
		if p.Contains(ip) && p.Bits() > best {
			best = p.Bits()
		}
	}
	return best
}
