package router

import (
	"fmt"
	"sort"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/straitproxy/strait/protocol"
)

// VirtualHost is a compiled virtual host. It is shared by all streams and
// must not be modified.
type VirtualHost struct {
	// Name is the virtual host's name, unique within its Table.
	Name string
	// AttemptCountUp and AttemptCountDown put x-envoy-attempt-count
	// (the attempt's number) on upstream requests and (how many attempts
	// were made) on responses: include_request_attempt_count and
	// include_attempt_count_in_response.
	AttemptCountUp, AttemptCountDown bool

	headers *mutation // its own level only
	routes  []*Route
	// requireTLS is require_tls; tlsRedirect answers a request that
	// breaks it (301 to https).
	requireTLS  routev3.VirtualHost_TlsRequirementType
	tlsRedirect *Route
}

// tlsRedirectFor reports the redirect a request gets under require_tls,
// as Envoy decides: ALL, any request whose x-forwarded-proto is not
// https; EXTERNAL_ONLY, such a request unless it is internal
// (x-envoy-internal: true).
func (vh *VirtualHost) tlsRedirectFor(h *protocol.Headers) *Route {
	if vh.requireTLS == routev3.VirtualHost_NONE {
		return nil
	}
	if p, _ := h.Get("x-forwarded-proto"); protocol.EqualFold(p, "https") {
		return nil
	}
	if vh.requireTLS == routev3.VirtualHost_EXTERNAL_ONLY {
		if v, _ := h.Get("x-envoy-internal"); string(v) == "true" {
			return nil
		}
	}
	return vh.tlsRedirect
}

// hostIndex finds the virtual host for an authority the way Envoy does:
// exact domain, then suffix wildcards ("*.foo.com", longest first), then
// prefix wildcards ("foo.*", longest first), then "*".
type hostIndex struct {
	exact    map[string]*VirtualHost
	suffixes []wildcards // longest first
	prefixes []wildcards // longest first
	any      *VirtualHost
}

// wildcards holds the wildcard domains whose fixed part has length n.
type wildcards struct {
	n     int
	hosts map[string]*VirtualHost
}

// add indexes one domain of vh. It returns the virtual host that already
// holds the domain, if any.
func (x *hostIndex) add(domain string, vh *VirtualHost) (*VirtualHost, error) {
	d := strings.ToLower(domain)
	star := strings.IndexByte(d, '*')
	switch {
	case d == "*":
		if x.any != nil {
			return x.any, nil
		}
		x.any = vh
		return nil, nil
	case star < 0:
		return putHost(&x.exact, d, vh), nil
	case strings.Count(d, "*") > 1 || (star != 0 && star != len(d)-1):
		return nil, fmt.Errorf("wildcard \"*\" must be the first or last character, got %q", domain)
	case star == 0:
		return putWildcard(&x.suffixes, d[1:], vh), nil
	default:
		return putWildcard(&x.prefixes, d[:len(d)-1], vh), nil
	}
}

func putHost(m *map[string]*VirtualHost, key string, vh *VirtualHost) *VirtualHost {
	if *m == nil {
		*m = make(map[string]*VirtualHost)
	}
	if old, ok := (*m)[key]; ok {
		return old
	}
	(*m)[key] = vh
	return nil
}

func putWildcard(groups *[]wildcards, key string, vh *VirtualHost) *VirtualHost {
	for i := range *groups {
		if (*groups)[i].n == len(key) {
			return putHost(&(*groups)[i].hosts, key, vh)
		}
	}
	*groups = append(*groups, wildcards{n: len(key), hosts: map[string]*VirtualHost{key: vh}})
	sort.Slice(*groups, func(i, j int) bool { return (*groups)[i].n > (*groups)[j].n })
	return nil
}

// find returns the virtual host for a lowercased host, or nil. A wildcard
// matches at least one byte: "*.foo.com" does not match ".foo.com".
func (x *hostIndex) find(host []byte) *VirtualHost {
	if vh, ok := x.exact[string(host)]; ok {
		return vh
	}
	for i := range x.suffixes {
		g := &x.suffixes[i]
		if g.n < len(host) {
			if vh, ok := g.hosts[string(host[len(host)-g.n:])]; ok {
				return vh
			}
		}
	}
	for i := range x.prefixes {
		g := &x.prefixes[i]
		if g.n < len(host) {
			if vh, ok := g.hosts[string(host[:g.n])]; ok {
				return vh
			}
		}
	}
	return x.any
}

// portStrip says which port the authority loses before host matching.
type portStrip struct {
	any      bool // strip_any_host_port or ignore_port_in_host_matching
	matching int  // strip_matching_host_port: the listener port, else 0
}

// apply returns host without its port when the mode says so. The request
// headers are not changed.
func (s portStrip) apply(host []byte) []byte {
	if !s.any && s.matching == 0 {
		return host
	}
	i := portStart(host)
	if i < 0 {
		return host
	}
	if s.any || portNumber(host[i+1:]) == s.matching {
		return host[:i]
	}
	return host
}

// portNumber parses decimal digits, returning -1 past 65535.
func portNumber(digits []byte) int {
	n := 0
	for _, c := range digits {
		n = n*10 + int(c-'0')
		if n > 65535 {
			return -1
		}
	}
	return n
}

// portStart returns the index of the ":" that starts a numeric port in
// host, or -1. An IPv6 literal keeps its colons: "[::1]:80" has a port,
// "[::1]" has none.
func portStart(host []byte) int {
	i := len(host) - 1
	for i >= 0 && '0' <= host[i] && host[i] <= '9' {
		i--
	}
	if i < 0 || host[i] != ':' || i == len(host)-1 {
		return -1
	}
	if host[0] == '[' {
		if i == 0 || host[i-1] != ']' {
			return -1
		}
		return i
	}
	for j := 0; j < i; j++ {
		if host[j] == ':' {
			return -1 // a bare IPv6 address, not a port
		}
	}
	return i
}

// maxStackHost is how long an authority may be and still be lowercased
// without allocating.
const maxStackHost = 256

// virtualHost returns the virtual host for an authority.
func (t *Table) virtualHost(authority []byte) *VirtualHost {
	host := t.strip.apply(authority)
	var buf [maxStackHost]byte
	return t.hosts.find(lowerASCII(buf[:0], host))
}

// lowerASCII returns b lowercased, appended to dst when it has an uppercase
// letter and b itself otherwise.
func lowerASCII(dst, b []byte) []byte {
	upper := false
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			upper = true
			break
		}
	}
	if !upper {
		return b
	}
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func newPortStrip(opt Options, ignorePort bool) (portStrip, error) {
	switch {
	case opt.StripAnyHostPort && opt.StripMatchingHostPort:
		return portStrip{}, fmt.Errorf("options: strip_any_host_port and strip_matching_host_port are exclusive")
	case opt.StripMatchingHostPort && (opt.ListenerPort <= 0 || opt.ListenerPort > 65535):
		return portStrip{}, fmt.Errorf("options: strip_matching_host_port needs a listener port, got %d", opt.ListenerPort)
	case opt.StripMatchingHostPort:
		return portStrip{any: ignorePort, matching: opt.ListenerPort}, nil
	}
	return portStrip{any: opt.StripAnyHostPort || ignorePort}, nil
}
