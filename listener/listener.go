package listener

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/tracelog"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/transport"
)

// Listener is one built listener: its address, filter chains and the
// connections it accepted.
type Listener struct {
	Name   string
	addr   string
	chains []*chain
	def    *chain
	// lfilters are the listener filters; the filter chain is chosen after
	// them (Envoy's listener_filters, listener_filters_timeout,
	// continue_on_listener_filters_timeout).
	lfilters   []filter.ListenerFilter
	lfTimeout  time.Duration
	lfContinue bool
	// lfAccept[i] is lfilters[i] when it acts as the connection is
	// accepted (original_dst), else nil; lfDisabled[i] its
	// filter_disabled (nil: never).
	lfAccept   []filter.AcceptFilter
	lfDisabled []predicate
	// bindToPort false: the listener binds nothing and gets only the
	// connections a use_original_dst listener hands it. useOrigDst: hand
	// each connection whose original destination was restored to the
	// listener of that address (dir), if one serves it.
	bindToPort bool
	useOrigDst bool
	dir        *Directory
	// lateTransport: some chain has a transport socket, installed once
	// the listener filters have chosen it.
	lateTransport bool
	io            network.IOModel
	bufferLimit   int
	// acceptBatch is max_connections_to_accept_per_socket_event (0: no
	// bound).
	acceptBatch int
	log         *slog.Logger

	bind     *binding
	draining atomic.Bool
	// Inbound: traffic_direction INBOUND (/drain_listeners?inboundonly).
	Inbound bool

	mu    sync.Mutex
	conns map[*network.Conn]network.Handler
	// logs are the listener's access_log: an entry per connection.
	logs accesslog.Loggers

	cxTotal, cxDestroy, noChain        *stats.Counter
	cxActive, preActive                *stats.Gauge
	preTimeout, lfError, lfRemoteClose *stats.Counter
}

// Options are what every listener shares.
type Options struct {
	Clusters filter.Clusters
	Stats    *stats.Scope
	Pool     *network.Pool
	Log      *slog.Logger
	IOModel  network.IOModel
	// Routes is the RDS source (nil without xDS).
	Routes filter.RouteSource
	// CheckSource refuses config sources that cannot be subscribed to.
	CheckSource func(src *corev3.ConfigSource) error
	// Runtime is the layered runtime (runtime_fraction and the like).
	Runtime *config.Runtime
	// Secrets is the secret store (static secrets and SDS).
	Secrets transport.SecretSource
	// AccessLogs opens access log files (nil: access_log is refused).
	AccessLogs *accesslog.Manager
	// Node is this proxy's node (the bootstrap's, as told to xDS).
	Node *corev3.Node
	// Directory finds listeners by address (use_original_dst); every
	// listener of a server shares one.
	Directory *Directory
}

// Build validates and builds l without binding it.
func Build(l *listenerv3.Listener, o Options) (*Listener, error) {
	if errs := config.ValidationErrors(l.ValidateAll()); len(errs) > 0 {
		return nil, config.Join(errs)
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, config.At("address", fmt.Errorf("a socket_address is required"))
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return nil, config.At("address.socket_address.protocol", fmt.Errorf("only TCP is supported"))
	}
	if err := supported.Check(l); err != nil {
		return nil, err
	}
	port := int(sa.GetPortValue())
	ln := &Listener{
		Name:        l.GetName(),
		addr:        net.JoinHostPort(sa.GetAddress(), strconv.Itoa(port)),
		io:          o.IOModel,
		bufferLimit: 1 << 20,
		log:         o.Log.With("listener", l.GetName()),
		conns:       map[*network.Conn]network.Handler{},
		Inbound:     l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND,
		bindToPort:  l.GetBindToPort() == nil || l.GetBindToPort().GetValue(),
		useOrigDst:  l.GetUseOriginalDst().GetValue(),
		dir:         o.Directory,
	}
	if ln.io == nil {
		ln.io = network.Netpoll
	}
	bc := &filter.BuildContext{Listener: ln.Name, Port: port, Clusters: o.Clusters, Stats: o.Stats,
		Pool: o.Pool, Log: ln.log, Draining: ln.draining.Load, Routes: o.Routes, CheckSource: o.CheckSource, Runtime: o.Runtime,
		Secrets: o.Secrets, Node: o.Node, Outbound: l.GetTrafficDirection() == corev3.TrafficDirection_OUTBOUND}
	if o.AccessLogs != nil {
		bc.AccessLogs = &accesslog.Context{Files: o.AccessLogs, Runtime: o.Runtime}
	}
	if err := ln.fromMetadata(l, bc); err != nil {
		return nil, err
	}
	var err error
	if ln.logs, err = accesslog.Build(bc.AccessLogs, l.GetAccessLog()); err != nil {
		return nil, config.At("access_log", err)
	}
	if v := l.GetMaxConnectionsToAcceptPerSocketEvent(); v != nil {
		ln.acceptBatch = int(v.GetValue()) // validated > 0
	}
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		ln.bufferLimit = int(v.GetValue())
		bc.BufferLimit = ln.bufferLimit
	}
	sc := o.Stats.Scope("listener", "envoy_listener_address", ln.addr)
	for i, fc := range l.GetFilterChains() {
		c, err := buildChain(bc, fc, sc)
		if err != nil {
			return nil, config.At(fmt.Sprintf("filter_chains[%d]", i), err)
		}
		ln.chains = append(ln.chains, c)
	}
	if d := l.GetDefaultFilterChain(); d != nil {
		c, err := buildChain(bc, d, sc)
		if err != nil {
			return nil, config.At("default_filter_chain", err)
		}
		ln.def = c
	}
	if len(ln.chains) == 0 && ln.def == nil {
		return nil, config.At("filter_chains", fmt.Errorf("a listener needs at least one filter chain"))
	}
	if err := uniqueMatches(ln.chains); err != nil {
		return nil, err
	}
	if err := ln.buildListenerFilters(bc, l); err != nil {
		return nil, err
	}
	ln.cxTotal, ln.cxDestroy = sc.Counter("downstream_cx_total"), sc.Counter("downstream_cx_destroy")
	ln.noChain, ln.cxActive = sc.Counter("no_filter_chain_match"), sc.Gauge("downstream_cx_active")
	ln.preActive, ln.preTimeout = sc.Gauge("downstream_pre_cx_active"), sc.Counter("downstream_pre_cx_timeout")
	ln.lfError, ln.lfRemoteClose = sc.Counter("downstream_listener_filter_error"), sc.Counter("downstream_listener_filter_remote_close")
	return ln, nil
}

// TransportReady reports whether every transport socket of the listener
// has its secrets (a listener warms until then).
func (l *Listener) TransportReady() bool {
	_, waiting := l.SecretsWait()
	return !waiting
}

// SecretsWait is how long the listener warms on its chains' TLS
// secrets (transport.SecretsWait).
func (l *Listener) SecretsWait() (time.Duration, bool) {
	var s []any
	for _, c := range l.allChains() {
		s = append(s, c.ts) // raw_buffer (nil) never waits
	}
	return transport.SecretsWait(s...)
}

// allChains lists the filter chains, the default one last (a new
// slice: the listener is shared by goroutines that read it at once).
func (l *Listener) allChains() []*chain {
	out := slices.Clip(l.chains)
	if l.def != nil {
		out = append(out, l.def)
	}
	return out
}

// Certificates lists the /certs entry of each TLS context of the
// listener's filter chains, at now.
func (l *Listener) Certificates(now time.Time) []*adminv3.Certificate {
	var out []*adminv3.Certificate
	for _, c := range l.allChains() {
		out = transport.AppendCertificates(out, c.ts, now)
	}
	return out
}

// ConfiguredAddress is the address as configured (port may be 0).
func (l *Listener) ConfiguredAddress() string { return l.addr }

// Addr is the bound address; nil before Start. A listener that binds
// nothing (bind_to_port false) reports its configured address.
func (l *Listener) Addr() net.Addr {
	if !l.bindToPort {
		a, _ := net.ResolveTCPAddr("tcp", l.addr)
		return a
	}
	if l.bind == nil {
		return nil
	}
	return l.bind.acc.Addr()
}

// ListenFile duplicates the listening socket (hot restart hands it to
// the next process); an error when the listener is not bound or its I/O
// model cannot.
func (l *Listener) ListenFile() (*os.File, error) {
	if l.bind == nil {
		return nil, fmt.Errorf("listener %q is not bound", l.Name)
	}
	fa, ok := l.bind.acc.(network.FileAcceptor)
	if !ok {
		return nil, fmt.Errorf("listener %q: its I/O model cannot hand its socket over", l.Name)
	}
	return fa.File()
}

// IOModel is the listener's I/O model.
func (l *Listener) IOModel() network.IOModel { return l.io }

// binding is a listening socket. It outlives the listener that bound it
// when an update takes it over: new connections go to whichever listener
// is current, and the socket never closes in between.
type binding struct {
	acc    network.Acceptor
	ctx    context.Context
	cancel context.CancelFunc
	cur    atomic.Pointer[Listener]
}

func (b *binding) accept(c *network.Conn) { b.cur.Load().serveConn(c) }

// owns reports whether l is the listener the socket serves.
func (l *Listener) owns() bool { return l.bind != nil && l.bind.cur.Load() == l }

// Start binds the listener with its I/O model and starts accepting (one
// with bind_to_port false only joins the directory).
func (l *Listener) Start(ctx context.Context) error {
	if !l.bindToPort {
		l.dir.add(l)
		return nil
	}
	b := &binding{}
	b.ctx, b.cancel = context.WithCancel(ctx)
	b.cur.Store(l)
	acc, err := l.io.Listen(b.ctx, l.addr, b.accept)
	if err != nil {
		b.cancel()
		return fmt.Errorf("listener %q: %w", l.Name, err)
	}
	b.acc = acc
	l.bind = b
	l.setAcceptBatch()
	l.dir.add(l)
	return nil
}

// setAcceptBatch applies max_connections_to_accept_per_socket_event to
// the listening socket, when its I/O model can bound its accepts.
func (l *Listener) setAcceptBatch() {
	if ba, ok := l.bind.acc.(network.BatchAcceptor); ok {
		ba.SetAcceptBatch(l.acceptBatch)
	}
}

// CanTakeOver reports whether l can take old's listening socket: same
// address and I/O model (or both bind nothing, at the same address).
func (l *Listener) CanTakeOver(old *Listener) bool {
	if !l.bindToPort || !old.bindToPort {
		return !l.bindToPort && !old.bindToPort && !old.draining.Load() && old.addr == l.addr
	}
	return old.owns() && !old.draining.Load() && old.addr == l.addr && old.io == l.io
}

// TakeOver makes l serve old's listening socket and drains old's
// connections: new connections get l's filter chains at once, and the port
// is never closed. The caller has checked CanTakeOver.
func (l *Listener) TakeOver(old *Listener) {
	if l.bindToPort {
		l.bind = old.bind
		l.bind.cur.Store(l)
		l.setAcceptBatch()
	}
	l.dir.add(l)
	old.Drain()
}

// CheckBind reports whether the listener's address can be bound, by
// binding it and letting it go at once (an update checks its new
// addresses before it is accepted; the real bind happens when the
// listener is warm). Port 0 always passes, and so does an address whose
// socket a hot restart handed over.
func (l *Listener) CheckBind() error {
	if _, port, _ := net.SplitHostPort(l.addr); !l.bindToPort || port == "0" || network.HasInherited(l.addr) {
		return nil
	}
	ln, err := net.Listen(network.TCPFamily(l.addr), l.addr)
	if err != nil {
		return fmt.Errorf("cannot bind %s: %w", l.addr, err)
	}
	return ln.Close()
}

// serveConn runs on the I/O model's accepting goroutine for each new
// connection: match a filter chain, attach its filters, start reading.
func (l *Listener) serveConn(c *network.Conn) {
	var skip uint64
	if len(l.lfilters) > 0 {
		var ok bool
		if skip, ok = l.acceptFilters(c); !ok {
			l.cxTotal.Inc()
			l.lfError.Inc()
			c.SetTerminationDetails("listener_filter_error")
			l.refuse(c, 0, "")
			return
		}
	}
	if l.useOrigDst && c.LocalAddrRestored() {
		// (Only to a listener of the same I/O model: the socket is this
		// model's to read.)
		if t := l.dir.Lookup(c.LocalAddr()); t != nil && t != l && t.io == l.io {
			t.serveConn(c) // counted there, with its listener filters
			return
		}
	}
	l.cxTotal.Inc()
	c.BufferLimit = l.bufferLimit
	if l.sniffs(skip) {
		l.sniff(c, skip)
		return
	}
	ch := l.match(c)
	if ch == nil {
		l.noChain.Inc()
		l.refuse(c, accesslog.NoRouteFound, "filter_chain_not_found")
		return
	}
	var sock transport.Socket
	if ch.ts != nil {
		var err error
		if sock, err = transport.Install(ch.ts, c); err != nil {
			l.log.Warn("transport socket refused the connection", "err", err)
			l.refuse(c, 0, "transport_socket_refused")
			return
		}
	}
	t, h, err := l.attach(c, ch)
	if err != nil {
		l.refuse(c, 0, "network_filter_refused")
		return
	}
	if sock != nil {
		sock.SetInner(t)
	} else {
		c.SetHandler(t)
	}
	network.Start(h) // the read filters' OnNewConnection
	l.io.Start(c)
	if l.draining.Load() {
		drain(h, c)
	}
}

// attach builds ch's network filters on c and tracks the connection; it
// returns the handler to read with (t) and the filters' own (h).
func (l *Listener) attach(c *network.Conn, ch *chain) (t, h network.Handler, err error) {
	for i := len(ch.factories) - 1; i >= 0; i-- {
		next, err := ch.factories[i].NewHandler(c, h)
		if err != nil {
			if h != nil {
				// The filters built already hear of the end (their
				// counters and state go back).
				h.OnClose(err)
			}
			return nil, nil, err
		}
		h = next
	}
	if tracelog.On(l.log) {
		tracelog.Log(l.log, "connection accepted", "remote", c.RemoteAddr(), "local", c.LocalAddr(), "chain", ch.name)
	}
	return l.track(c, h), h, nil
}

// track counts c as the listener's, served by h, until it closes.
func (l *Listener) track(c *network.Conn, h network.Handler) network.Handler {
	l.cxActive.Inc()
	l.mu.Lock()
	l.conns[c] = h
	l.mu.Unlock()
	return &tracked{Handler: h, l: l, c: c}
}

// tracked removes a connection from its listener when it closes.
type tracked struct {
	network.Handler
	l *Listener
	c *network.Conn
}

func (t *tracked) OnClose(err error) {
	t.Handler.OnClose(err)
	if tracelog.On(t.l.log) {
		tracelog.Log(t.l.log, "connection closed", "remote", t.c.RemoteAddr(), "err", err)
	}
	if t.l.logs != nil && !t.c.Migrated() {
		// Before the connection leaves the listener's count: a drain
		// that waits for none to be left finds its line written (a
		// migrated one is the next process's to log).
		t.l.logConn(t.c, 0, "")
	}
	t.l.mu.Lock()
	delete(t.l.conns, t.c)
	t.l.mu.Unlock()
	t.l.cxActive.Dec()
	if !t.c.Migrated() { // the next process counts its end
		t.l.cxDestroy.Inc()
	}
}

// refuse closes a connection no filter chain takes, logging it.
func (l *Listener) refuse(c *network.Conn, flags accesslog.Flags, details string) {
	c.Close()
	if l.logs != nil {
		l.logConn(c, flags, details)
	}
}

// logConn writes a connection's entry to the listener's access_log, as
// it closes: Envoy's listener access logs, one entry per connection.
// details is why the listener refused it (%RESPONSE_CODE_DETAILS%, as
// Envoy's filter_chain_not_found); why a filter closed it is the
// connection's termination details.
func (l *Listener) logConn(c *network.Conn, flags accesslog.Flags, details string) {
	e := &accesslog.Entry{
		Start: c.Start(), Duration: time.Since(c.Start()),
		RequestDuration: accesslog.Unknown, ResponseDuration: accesslog.Unknown, ResponseTxDuration: accesslog.Unknown,
		BytesReceived: c.BytesRead(), BytesSent: c.BytesWritten(), Flags: flags,
		Conn: c, ConnectionID: c.ID(), ResponseCodeDetails: details, TerminationDetails: c.TerminationDetails(),
	}
	if info := c.Info(); info != nil {
		e.ServerName = info.ServerName
	}
	l.logs.Log(e)
}

func (l *Listener) match(c *network.Conn) *chain {
	local, _ := c.LocalAddr().(*net.TCPAddr)
	remote, _ := c.RemoteAddr().(*net.TCPAddr)
	return l.matchConn(&connKey{local: local, remote: remote, info: c.Info()})
}

// matchConn picks the chain for a connection (Envoy's order), else the
// default chain.
func (l *Listener) matchConn(k *connKey) *chain {
	if best := matchChain(l.chains, k); best != nil {
		return best
	}
	return l.def
}

// Draining reports whether Drain was called.
func (l *Listener) Draining() bool { return l.draining.Load() }

// Drain stops accepting and asks every connection to finish: HTTP
// connections close once their in-flight request is answered, idle ones
// at once; others are left to end by themselves until Close.
func (l *Listener) Drain() {
	if l.draining.Swap(true) {
		return
	}
	l.dir.remove(l)
	if l.owns() {
		l.bind.acc.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for c, h := range l.conns {
		drain(h, c)
	}
}

// DrainGracefully asks every connection to finish, as Drain does, but
// keeps accepting for d (new connections are drained as they come), then
// stops: clients are told to go away before the port closes (Envoy's
// /drain_listeners?graceful).
func (l *Listener) DrainGracefully(d time.Duration) {
	if l.draining.Swap(true) {
		return
	}
	l.dir.remove(l)
	l.mu.Lock()
	for c, h := range l.conns {
		drain(h, c)
	}
	l.mu.Unlock()
	if l.owns() {
		acc := l.bind.acc
		time.AfterFunc(d, func() { acc.Close() })
	}
}

func drain(h network.Handler, c *network.Conn) {
	if d, ok := h.(interface{ Drain() }); ok {
		d.Drain()
	}
}

// Active reports the open connections.
func (l *Listener) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Close closes the listening socket and every connection.
func (l *Listener) Close() {
	l.draining.Store(true)
	l.dir.remove(l)
	if l.owns() {
		l.bind.acc.Close()
		l.bind.cancel()
	}
	l.mu.Lock()
	conns := make([]*network.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// fromMetadata reads the listener's own settings that Envoy's Listener
// has no field for: its I/O model, and the body limit of framed-RPC calls
// (Dubbo) its filters accept:
//
//	metadata: { filter_metadata: { strait: { io_model: epoll, rpc_max_body_bytes: 16777216 } } }
func (l *Listener) fromMetadata(cfg *listenerv3.Listener, bc *filter.BuildContext) error {
	md, ok := cfg.GetMetadata().GetFilterMetadata()["strait"]
	if !ok {
		return nil
	}
	for key, v := range md.GetFields() {
		path := "metadata.filter_metadata.strait." + key
		switch key {
		case "io_model":
			m, err := network.Model(v.GetStringValue())
			if err != nil {
				return config.At(path, err)
			}
			l.io = m
		case "rpc_max_body_bytes":
			n, err := config.RPCBodyLimit(v)
			if err != nil {
				return config.At(path, err)
			}
			bc.RPCMaxBody = n
		default:
			return config.At(path, fmt.Errorf("unknown key (supported: io_model, rpc_max_body_bytes)"))
		}
	}
	return nil
}
