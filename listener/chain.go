package listener

import (
	"fmt"
	"net"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/transport"
)

// chain is a built filter chain with its match.
type chain struct {
	name      string
	ports     uint32 // destination_port, 0 = any
	dst, src  []netip.Prefix
	srcPorts  map[uint32]bool
	factories []filter.NetworkFactory
	// ts is the transport socket (nil: raw_buffer).
	ts transport.Downstream
}

func buildChain(bc *filter.BuildContext, fc *listenerv3.FilterChain) (*chain, error) {
	c := &chain{name: fc.GetName()}
	if err := c.buildMatch(fc.GetFilterChainMatch()); err != nil {
		return nil, config.At("filter_chain_match", err)
	}
	ts, err := transport.Build(&transport.BuildContext{Log: bc.Log}, fc.GetTransportSocket())
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
	switch {
	case len(m.GetServerNames()) > 0:
		return config.At("server_names", fmt.Errorf("SNI matching needs TLS, not supported yet"))
	case m.GetTransportProtocol() != "":
		return config.At("transport_protocol", fmt.Errorf("not supported yet"))
	case len(m.GetApplicationProtocols()) > 0:
		return config.At("application_protocols", fmt.Errorf("not supported yet"))
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

// score rates how specifically c matches a connection; -1 is no match.
// The most specific criteria count most, as in Envoy's match order.
func (c *chain) score(local, remote *net.TCPAddr) int {
	s := 0
	if c.ports != 0 {
		if local == nil || uint32(local.Port) != c.ports {
			return -1
		}
		s += 1000
	}
	if len(c.dst) > 0 {
		best := longest(c.dst, local)
		if best < 0 {
			return -1
		}
		s += 10 * (best + 1)
	}
	if len(c.src) > 0 {
		best := longest(c.src, remote)
		if best < 0 {
			return -1
		}
		s += best + 1
	}
	if c.srcPorts != nil {
		if remote == nil || !c.srcPorts[uint32(remote.Port)] {
			return -1
		}
		s++
	}
	return s
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
