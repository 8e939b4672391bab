package listener

import (
	"fmt"
	"net"
	"strconv"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
)

// Sidecar capture, as Envoy does it: iptables redirects a pod's
// connections to one listener (Istio's virtualOutbound) whose
// original_dst listener filter restores each connection's original
// destination; with use_original_dst the listener then hands the
// connection to the listener of that address (bound to it, or, with
// bind_to_port false, bound to nothing and reached only this way), else
// keeps it (its own chains: a passthrough). Directory is where the
// serving listeners are found by address.

// Directory maps addresses to the listeners serving them, for
// use_original_dst. Listeners join it as they start serving and leave as
// they drain. A nil Directory finds nothing.
type Directory struct {
	mu sync.RWMutex
	by map[string]*Listener // by "ip:port" (bound: the bound address)
}

// NewDirectory returns an empty directory.
func NewDirectory() *Directory { return &Directory{by: map[string]*Listener{}} }

// key is the address l serves: its bound address, or its configured
// one when it binds nothing.
func (l *Listener) key() string {
	if a := l.Addr(); a != nil {
		return a.String()
	}
	return l.addr
}

func (d *Directory) add(l *Listener) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.by[l.key()] = l
	d.mu.Unlock()
}

// remove takes l out, unless another listener serves its address now.
func (d *Directory) remove(l *Listener) {
	if d == nil {
		return
	}
	d.mu.Lock()
	if k := l.key(); d.by[k] == l {
		delete(d.by, k)
	}
	d.mu.Unlock()
}

// Lookup is the listener for a connection whose original destination is
// a: the one serving exactly that address, else one serving any address
// (0.0.0.0, or [::]) on its port, as Envoy looks them up; nil if none.
func (d *Directory) Lookup(a net.Addr) *Listener {
	ta, ok := a.(*net.TCPAddr)
	if d == nil || !ok {
		return nil
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if l := d.by[ta.String()]; l != nil {
		return l
	}
	port := strconv.Itoa(ta.Port)
	if ta.IP.To4() != nil {
		if l := d.by["0.0.0.0:"+port]; l != nil {
			return l
		}
	}
	return d.by["[::]:"+port]
}

// predicate is a listener filter's filter_disabled
// (ListenerFilterChainMatchPredicate), on the connection's local address
// (the original destination once original_dst restored it).
type predicate func(local *net.TCPAddr) bool

func buildPredicate(p *listenerv3.ListenerFilterChainMatchPredicate) (predicate, error) {
	set := func(name string, rules []*listenerv3.ListenerFilterChainMatchPredicate, all bool) (predicate, error) {
		var ps []predicate
		for i, r := range rules {
			p, err := buildPredicate(r)
			if err != nil {
				return nil, config.At(fmt.Sprintf("%s.rules[%d]", name, i), err)
			}
			ps = append(ps, p)
		}
		return func(a *net.TCPAddr) bool {
			for _, p := range ps {
				if p(a) != all {
					return !all
				}
			}
			return all
		}, nil
	}
	switch r := p.GetRule().(type) {
	case *listenerv3.ListenerFilterChainMatchPredicate_AnyMatch:
		return func(*net.TCPAddr) bool { return r.AnyMatch }, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_OrMatch:
		return set("or_match", r.OrMatch.GetRules(), false)
	case *listenerv3.ListenerFilterChainMatchPredicate_AndMatch:
		return set("and_match", r.AndMatch.GetRules(), true)
	case *listenerv3.ListenerFilterChainMatchPredicate_NotMatch:
		inner, err := buildPredicate(r.NotMatch)
		if err != nil {
			return nil, config.At("not_match", err)
		}
		return func(a *net.TCPAddr) bool { return !inner(a) }, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange:
		lo, hi := int(r.DestinationPortRange.GetStart()), int(r.DestinationPortRange.GetEnd())
		return func(a *net.TCPAddr) bool { return a != nil && a.Port >= lo && a.Port < hi }, nil
	}
	return nil, fmt.Errorf("a rule is required")
}

// acceptFilters runs, as c is accepted, the listener filters that act
// then (original_dst) and decides which filters filter_disabled turns
// off for c (skip: bit i for filter i). false: a filter refused c.
func (l *Listener) acceptFilters(c *network.Conn) (skip uint64, ok bool) {
	for i, f := range l.lfilters {
		if p := l.lfDisabled[i]; p != nil {
			local, _ := c.LocalAddr().(*net.TCPAddr)
			if p(local) {
				skip |= 1 << i
				continue
			}
		}
		if af := l.lfAccept[i]; af != nil {
			if err := af.OnAccept(c); err != nil {
				l.log.Debug("listener filter refused the connection", "filter", fmt.Sprintf("%T", f), "err", err)
				return 0, false
			}
		}
	}
	return skip, true
}

// sniffs reports whether some listener filter must read c's first bytes.
func (l *Listener) sniffs(skip uint64) bool {
	for i := range l.lfilters {
		if l.lfAccept[i] == nil && skip&(1<<i) == 0 {
			return true
		}
	}
	return false
}
