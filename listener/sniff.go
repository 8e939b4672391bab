package listener

import (
	"fmt"
	"net"
	"sync"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/transport"
)

// defaultListenerFiltersTimeout is Envoy's listener_filters_timeout
// default.
const defaultListenerFiltersTimeout = 15 * time.Second

// buildListenerFilters builds cfg's listener filters and their timeout.
func (l *Listener) buildListenerFilters(bc *filter.BuildContext, cfg *listenerv3.Listener) error {
	if n := len(cfg.GetListenerFilters()); n > 64 {
		return config.At("listener_filters", fmt.Errorf("%d filters: at most 64", n))
	}
	for i, lf := range cfg.GetListenerFilters() {
		path := fmt.Sprintf("listener_filters[%d]", i)
		f, err := filter.BuildListener(bc, lf.GetName(), lf.GetTypedConfig())
		if err != nil {
			return config.At(path, fmt.Errorf("filter %q: %w", lf.GetName(), err))
		}
		var p predicate
		if d := lf.GetFilterDisabled(); d != nil {
			if p, err = buildPredicate(d); err != nil {
				return config.At(path+".filter_disabled", err)
			}
		}
		af, _ := f.(filter.AcceptFilter)
		l.lfilters, l.lfAccept, l.lfDisabled = append(l.lfilters, f), append(l.lfAccept, af), append(l.lfDisabled, p)
	}
	l.lfTimeout = defaultListenerFiltersTimeout
	if d := cfg.GetListenerFiltersTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return config.At("listener_filters_timeout", fmt.Errorf("invalid duration"))
		}
		l.lfTimeout = d.AsDuration() // 0: none
	}
	l.lfContinue = cfg.GetContinueOnListenerFiltersTimeout()
	if len(l.lfilters) == 0 {
		for _, c := range append(l.chains, l.def) {
			if c != nil && c.needsInspection() {
				l.log.Warn("a filter chain matches on server_names, transport_protocol or application_protocols, but the listener has no listener filters to find them (add envoy.filters.listener.tls_inspector or http_inspector): it never matches", "chain", c.name)
			}
		}
	}
	for _, c := range append(l.chains, l.def) {
		if c != nil && c.ts != nil {
			l.lateTransport = true
		}
	}
	return nil
}

// uniqueMatches refuses two chains that match the same connections
// alike, as Envoy does.
func uniqueMatches(chains []*chain) error {
	seen := map[string]int{}
	for i, c := range chains {
		keys, ok := c.keys()
		if !ok {
			continue
		}
		for _, k := range keys {
			if j, dup := seen[k]; dup && j != i {
				return config.At(fmt.Sprintf("filter_chains[%d].filter_chain_match", i),
					fmt.Errorf("matches what filter_chains[%d] matches (%s): each connection must have one most specific chain", j, k))
			}
			seen[k] = i
		}
	}
	return nil
}

// The states of a sniffer.
const (
	sniffing = iota
	timedOut // continue_on_listener_filters_timeout: hand over as is
	finished // handed over, or closed
)

// sniffer is a new connection's handler while its listener filters run:
// it consumes nothing, so the chain it then chooses reads the same bytes
// (a TLS chain's handshake starts with them).
type sniffer struct {
	l    *Listener
	c    *network.Conn
	late *transport.Late // the socket, when a chain may install TLS
	info network.ConnInfo
	next int    // the first listener filter not done
	skip uint64 // the filters filter_disabled turned off (bit i: filter i)
	pre  bool   // counted in downstream_pre_cx_active
	// logged: the access log has this connection (handOver refused it,
	// or a filter chain took it and logs it as it closes).
	logged bool

	mu    sync.Mutex
	state int
	timer *time.Timer
}

// sniff starts c with the listener filters that read (those that act on
// accept have; skip are off for c).
func (l *Listener) sniff(c *network.Conn, skip uint64) {
	s := &sniffer{l: l, c: c, pre: true, skip: skip}
	if _, blocking := c.Socket().(net.Conn); l.lateTransport && blocking {
		s.late = transport.NewLate(c.Socket())
		c.WrapSocket(func(network.Socket) (network.Socket, error) { return s.late, nil })
	}
	l.preActive.Inc()
	l.mu.Lock()
	l.conns[c] = s
	l.mu.Unlock()
	c.SetHandler(s)
	if l.lfTimeout > 0 {
		s.mu.Lock()
		s.timer = time.AfterFunc(l.lfTimeout, s.expire)
		s.mu.Unlock()
	}
	l.io.Start(c)
}

// expire is listener_filters_timeout.
func (s *sniffer) expire() {
	s.mu.Lock()
	if s.state != sniffing {
		s.mu.Unlock()
		return
	}
	s.l.preTimeout.Inc()
	if !s.l.lfContinue {
		s.state = finished
		s.mu.Unlock()
		s.c.SetTerminationDetails("listener_filters_timeout")
		s.c.Close()
		return
	}
	s.state = timedOut
	s.mu.Unlock()
	s.c.Kick(s) // the reader hands over with what it has
}

// finish ends sniffing; false when the timeout closed the connection.
func (s *sniffer) finish() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == finished {
		return false
	}
	s.state = finished
	if s.timer != nil {
		s.timer.Stop()
	}
	return true
}

func (s *sniffer) OnRead(data []byte) int {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st == finished {
		return 0
	}
	for st == sniffing && s.next < len(s.l.lfilters) {
		if s.l.lfAccept[s.next] != nil || s.skip&(1<<s.next) != 0 {
			s.next++
			continue
		}
		done, err := s.l.lfilters[s.next].Inspect(data, &s.info)
		if err != nil {
			if s.finish() {
				s.l.lfError.Inc()
				s.c.SetTerminationDetails("listener_filter_error")
				s.c.Close()
			}
			return 0
		}
		if !done {
			return 0
		}
		s.next++
	}
	if !s.finish() {
		return 0
	}
	return s.handOver(data)
}

// handOver chooses the filter chain with what the listener filters
// learned, installs its transport socket and filters, and gives them the
// bytes read so far.
func (s *sniffer) handOver(data []byte) int {
	l, c := s.l, s.c
	s.unPre()
	if s.info.TransportProtocol == "" {
		s.info.TransportProtocol = "raw_buffer"
	}
	c.SetInfo(&s.info)
	ch := l.match(c)
	if ch == nil {
		l.noChain.Inc()
		s.logged = true
		l.refuse(c, accesslog.NoRouteFound, "filter_chain_not_found")
		return 0
	}
	consumed := 0
	var sock transport.Socket
	if ch.ts != nil {
		var err error
		if s.late != nil {
			c.MarkSecure()
			err = s.late.Install(ch.ts, data) // netpoll: the socket reads them first
		} else {
			sock, err = transport.Install(ch.ts, c) // epoll: given them below
		}
		if err != nil {
			l.log.Warn("transport socket refused the connection", "err", err)
			s.logged = true
			l.refuse(c, 0, "transport_socket_refused")
			return 0
		}
		consumed = len(data)
	}
	t, h, err := l.attach(c, ch)
	if err != nil {
		l.forget(c)
		s.logged = true
		l.refuse(c, 0, "network_filter_refused")
		return consumed
	}
	s.logged = true // the chain's tracked handler logs it from here
	if sock != nil {
		sock.SetInner(t)
	} else {
		c.SetHandler(t)
	}
	network.Start(h) // the read filters' OnNewConnection
	if c.Closed() {
		return len(data)
	}
	if sock != nil {
		sock.OnRead(data)
	}
	if l.draining.Load() {
		drain(h, c)
	}
	if consumed == 0 && len(data) > 0 && !c.Paused() {
		return t.OnRead(data)
	}
	// A chain that paused at once (tcp_proxy while it connects) is offered
	// the bytes again when it resumes.
	return consumed
}

func (s *sniffer) unPre() {
	if s.pre {
		s.pre = false
		s.l.preActive.Dec()
	}
}

// OnEOF: the peer closed before the listener filters were done.
func (s *sniffer) OnEOF() {
	if s.finish() {
		s.l.lfRemoteClose.Inc()
	}
	s.c.Close()
}

// OnClose: closed before a filter chain took the connection; it is
// logged unless handOver refused it (and logged it) already.
func (s *sniffer) OnClose(error) {
	s.finish()
	s.unPre()
	if s.l.logs != nil && !s.logged {
		s.l.logConn(s.c, 0, "")
	}
	s.l.forget(s.c)
}

// forget drops a connection that never reached a filter chain.
func (l *Listener) forget(c *network.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}
