// Package server is the process's lifecycle: it builds every part from a
// Bootstrap (all or nothing; no port is opened until everything built),
// starts listeners and the admin server, and drains on shutdown. It wires
// the managers together; nothing imports it but cmd.
package server

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/admin"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/tracelog"
	"github.com/straitproxy/strait/listener"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/tlsconfig"
	"github.com/straitproxy/strait/upstream"
	"google.golang.org/protobuf/proto"
)

// Options are the command line's settings.
type Options struct {
	Log              *slog.Logger
	DrainTime        time.Duration
	AdminAllowRemote bool
	ServiceNode      string
	ServiceCluster   string
	IOModel          network.IOModel
	Workers          int
	// Version is what the node reports to a management server.
	Version string
	// FileFlushInterval is how long access log lines may wait before
	// they are written (Envoy's --file-flush-interval-msec; 0: 1 s).
	FileFlushInterval time.Duration
	// CommandLine is what /server_info shows of the command line.
	CommandLine *adminv3.CommandLineOptions
	// LogLevels, when the process's logger is built on it, lets
	// /logging change levels while it runs.
	LogLevels *tracelog.Levels
}

// Server is one running configuration.
type Server struct {
	boot  *bootstrapv3.Bootstrap
	opts  Options
	log   *slog.Logger
	store *stats.Store
	// clusters is the cluster manager (static clusters, and CDS's).
	clusters *upstream.Clusters
	// listeners are the bootstrap's; xDS may not replace them.
	listeners []*listener.Listener
	dyn       *dynamic
	// directory finds every listener by address (use_original_dst).
	directory *listener.Directory
	// runtime is layered_runtime's merged values; rtLayers what keeps its
	// disk and RTDS layers current.
	runtime   *config.Runtime
	rtLayers  *runtimeLayers
	admin     *admin.Server
	adminAddr string
	pool      *network.Pool
	ready     atomic.Bool
	// initializing: xDS has not delivered its first config yet.
	initializing atomic.Bool
	loaded       time.Time
	stopOnce     sync.Once
	// secrets are the static and SDS secrets TLS contexts use.
	secrets *tlsconfig.Secrets
	// logs are the access log files.
	logs *accesslog.Manager
	// healthFailed: /healthcheck/fail was called (and not /healthcheck/ok).
	healthFailed atomic.Bool
	quit         chan struct{}
	quitOnce     sync.Once
	closedOnce   sync.Once
	// Hot restart (upgrade.go): the socket the next epoch connects to,
	// and when the family's first process started.
	upgradeLn atomic.Pointer[net.UnixListener]
	firstUp   atomic.Int64 // unix nanoseconds
	// closed closes when closeAll is done; handingOff says a next epoch
	// follows this one's counters, and handedOff closes once the last
	// of them is sent (upgrade.go).
	closed     chan struct{}
	handingOff atomic.Bool
	handedOff  chan struct{}
	// migrated closes once the connections that move have moved;
	// stopping: Shutdown began (nothing is migrated after that).
	migrated chan struct{}
	stopping atomic.Bool
	// parentConns: the connections the draining previous epoch has.
	parentConns atomic.Int64
}

// New validates b and builds everything without opening a port. The error
// lists every problem found, each with its field path.
func New(b *bootstrapv3.Bootstrap, o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Server{boot: b, opts: o, log: o.Log, store: stats.NewStore(), loaded: time.Now(), quit: make(chan struct{}),
		closed: make(chan struct{}), handedOff: make(chan struct{}), migrated: make(chan struct{})}
	s.firstUp.Store(s.loaded.UnixNano())
	s.pool = network.NewPool(o.Workers)
	if err := s.checkBootstrap(); err != nil {
		return nil, err
	}
	root := s.store.Root()
	s.logs = accesslog.NewManager(fileStats(root), o.FileFlushInterval)
	built := false
	defer func() {
		if !built {
			s.logs.Close()
		}
	}()
	sr := b.GetStaticResources()
	s.secrets = tlsconfig.NewSecrets()
	s.secrets.Log = s.log
	s.secrets.CheckSource = func(cs *corev3.ConfigSource) error { return checkSource(s.boot, cs) }
	if err := s.secrets.SetStatic(sr.GetSecrets()); err != nil {
		return nil, err
	}
	cm, err := upstream.Build(sr.GetClusters(), root, s.log, upstream.Env{Secrets: s.secrets, Node: s.node()})
	if err != nil {
		s.secrets.Close()
		return nil, config.At("static_resources", err)
	}
	if s.runtime, s.rtLayers, err = buildRuntime(b, s.node().GetCluster()); err != nil {
		cm.Stop()
		return nil, err
	}
	if dr := b.GetDynamicResources(); dr != nil || len(s.rtLayers.rtds) > 0 {
		if s.dyn, err = newDynamic(s, dr, cm); err != nil {
			cm.Stop()
			return nil, config.At("dynamic_resources", err)
		}
	} else {
		s.clusters = upstream.NewClusters(cm, root, s.log, upstream.ClustersOptions{})
	}
	if err := s.buildListeners(); err != nil {
		if s.dyn != nil {
			s.dyn.stop()
		}
		cm.Stop()
		s.secrets.Close()
		return nil, err
	}
	if s.dyn != nil {
		s.dyn.listeners.SetStatic(s.listeners)
	}
	s.admin = admin.New(s, s.store, s.log.With("component", "admin"))
	if ls, err := s.adminLoggers(b.GetAdmin()); err != nil {
		s.closeAll()
		return nil, err
	} else if len(ls) > 0 {
		s.admin.SetRequestLog(logAdmin(ls))
	}
	s.serverStats(root)
	built = true
	return s, nil
}

func (s *Server) checkBootstrap() error {
	b := s.boot
	var errs []error
	if b.GetDynamicResources() != nil {
		if err := checkDynamic(b); err != nil {
			errs = append(errs, err)
		}
	}
	if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
		if err := admin.CheckAddress(sa.GetAddress(), s.opts.AdminAllowRemote); err != nil {
			errs = append(errs, config.At("admin.address.socket_address.address", err))
		}
		s.adminAddr = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
	} else if b.GetAdmin().GetAddress() != nil {
		errs = append(errs, config.At("admin.address", errors.New("a socket_address is required")))
	}
	if err := supported.Check(b); err != nil {
		errs = append(errs, err)
	}
	return config.Join(errs)
}

func (s *Server) buildListeners() error {
	var errs []error
	names := map[string]bool{}
	addrs := map[string]string{}
	for i, l := range s.boot.GetStaticResources().GetListeners() {
		var rec *listener.StaticRoutes
		o := s.listenerOptions(nil)
		if s.dyn != nil {
			rec = s.dyn.listeners.StaticRoutes()
			o.Routes = rec
		}
		path := fmt.Sprintf("static_resources.listeners[%d]", i)
		if l.GetName() == "" {
			// As Envoy: a listener without a name gets a unique one.
			l = proto.Clone(l).(*listenerv3.Listener)
			l.Name = newUUID()
		}
		if names[l.GetName()] {
			errs = append(errs, config.At(path+".name", fmt.Errorf("duplicate listener name %q", l.GetName())))
			continue
		}
		names[l.GetName()] = true
		ln, err := listener.Build(l, o)
		if err != nil {
			errs = append(errs, config.At(path, err))
			continue
		}
		a := ln.ConfiguredAddress()
		if _, port, _ := net.SplitHostPort(a); port != "0" {
			if other, dup := addrs[a]; dup {
				errs = append(errs, config.At(path+".address", fmt.Errorf("listener %q already uses %s", other, a)))
				continue
			}
			addrs[a] = l.GetName()
		}
		s.listeners = append(s.listeners, ln)
		if rec != nil {
			// A static listener may use RDS: it serves at once, and
			// answers 404 until its routes arrive.
			s.dyn.listeners.RegisterStatic(rec)
		}
	}
	return config.Join(errs)
}

// listenerOptions are what every listener is built with.
func (s *Server) listenerOptions(routes filter.RouteSource) listener.Options {
	if s.directory == nil {
		s.directory = listener.NewDirectory()
	}
	o := listener.Options{Clusters: s.clusters, Stats: s.store.Root(), Pool: s.pool, Log: s.log, IOModel: s.opts.IOModel, Runtime: s.runtime,
		Secrets: s.secrets, AccessLogs: s.logs, Node: s.node(), Directory: s.directory}
	if routes != nil {
		o.Routes = routes
	}
	return o
}

// node is the identity sent to the management server: the bootstrap's
// node, with --service-node and --service-cluster over it.
func (s *Server) node() *corev3.Node {
	n := &corev3.Node{}
	if bn := s.boot.GetNode(); bn != nil {
		n = proto.Clone(bn).(*corev3.Node)
	}
	if s.opts.ServiceNode != "" {
		n.Id = s.opts.ServiceNode
	}
	if s.opts.ServiceCluster != "" {
		n.Cluster = s.opts.ServiceCluster
	}
	n.UserAgentName = "strait"
	n.UserAgentVersionType = &corev3.Node_UserAgentVersion{UserAgentVersion: s.opts.Version}
	return n
}

// dialStatic connects to a host of a static cluster (the management
// server's), within the cluster's connect timeout.
func (s *Server) dialStatic(ctx context.Context, name string, alpn []string) (net.Conn, error) {
	c := s.clusters.Static(name)
	h := c.Pick(&upstream.PickHint{Random: rand.Uint64()})
	if h == nil {
		return nil, fmt.Errorf("cluster %q has no host", name)
	}
	// Over the cluster's TLS, if it has one, offering alpn (h2 for gRPC,
	// http/1.1 for REST) unless the cluster names its own.
	return h.DialUncounted(ctx, alpn)
}

func (s *Server) serverStats(root *stats.Scope) {
	sc := root.Scope("server", "", "")
	sc.Gauge("live").Set(1)
	sc.Gauge("concurrency").Set(int64(s.pool.Max()))
	pool := s.pool
	sc.GaugeFunc("workers_active", func() int64 { return int64(pool.Active()) })
	sc.GaugeFunc("workers_alive", func() int64 { return int64(pool.Workers()) })
	sc.GaugeFunc("workers_max", func() int64 { return int64(pool.Max()) })
	sc.GaugeFunc("workers_queued", func() int64 { return int64(pool.Queued()) })
	// Envoy's hot restart gauges: the draining parent's connections, and
	// the family's.
	sc.GaugeFunc("parent_connections", s.parentConns.Load)
	sc.GaugeFunc("total_connections", func() int64 { return int64(s.activeConns()) + s.parentConns.Load() })
	seen := map[string]bool{}
	for _, l := range s.listeners {
		if m, ok := l.IOModel().(interface {
			Events() uint64
			Connections() int
			Readers() int
		}); ok && !seen[l.IOModel().Name()] {
			seen[l.IOModel().Name()] = true
			ms := sc.Scope(l.IOModel().Name(), "", "")
			ms.CounterFunc("reactor_events", func() int64 { return int64(m.Events()) })
			ms.GaugeFunc("connections", func() int64 { return int64(m.Connections()) })
			ms.GaugeFunc("readers", func() int64 { return int64(m.Readers()) })
		}
	}
}

// Start resolves DNS clusters, binds every listener and the admin server.
// If any bind fails, what was bound is closed again.
func (s *Server) Start(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	s.clusters.Current().Start(dctx)
	cancel()
	// The admin first: a failure there must not have taken connections
	// (a hot restart's listeners serve the parent's sockets).
	if s.adminAddr != "" {
		if err := s.admin.Start(s.adminAddr); err != nil {
			s.closeAll()
			return err
		}
		s.log.Info("admin listening", "address", s.admin.Addr().String())
	}
	for _, l := range s.listeners {
		if err := l.Start(context.Background()); err != nil {
			s.closeAll()
			return err
		}
		s.log.Info("listening", "listener", l.Name, "address", l.Addr().String())
	}
	go s.watchDisk(s.rtLayers)
	if s.dyn != nil {
		s.initializing.Store(true)
		s.dyn.start()
	}
	s.ready.Store(true)
	return nil
}

// Shutdown drains: listeners stop accepting, connections finish their
// in-flight requests (idle ones close at once), then whatever is left is
// closed when ctx ends or the drain time passes.
func (s *Server) Shutdown(ctx context.Context) {
	s.stopping.Store(true)
	s.ready.Store(false)
	if s.dyn != nil {
		s.dyn.stop()
	}
	if s.handingOff.Load() {
		// Before the drain: an idle HTTP/1.1 connection moves rather
		// than closes (each is held at most migrateWait; the whole
		// within the drain time).
		select {
		case <-s.migrated:
		case <-ctx.Done():
		case <-time.After(s.opts.DrainTime):
		}
	}
	for _, l := range s.allListeners() {
		l.Drain()
	}
	deadline := time.NewTimer(s.opts.DrainTime)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for s.activeConns() > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-deadline.C:
			break wait
		case <-tick.C:
		}
	}
	s.closeAll()
}

func (s *Server) activeConns() int {
	n := 0
	for _, l := range s.allListeners() {
		n += l.Active()
	}
	return n
}

// allListeners are the static listeners, then the dynamic ones (active,
// then draining).
func (s *Server) allListeners() []*listener.Listener {
	out := append([]*listener.Listener(nil), s.listeners...)
	if s.dyn != nil {
		out = append(out, s.dyn.listeners.Listeners()...)
	}
	return out
}

func (s *Server) closeAll() {
	s.stopOnce.Do(func() { close(s.rtLayers.stop) })
	if ln := s.upgradeLn.Load(); ln != nil {
		ln.Close() // (removes the socket file)
	}
	if s.dyn != nil {
		s.dyn.stop()
	}
	for _, l := range s.allListeners() {
		l.Close()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	s.clusters.Stop()
	s.pool.Close()
	s.secrets.Close()
	// The connections just closed write their access log lines as their
	// readers see the close: give them a moment before the files go.
	for deadline := time.Now().Add(time.Second); s.activeConns() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	s.logs.Close()
	s.closedOnce.Do(func() { close(s.closed) })
	if s.handingOff.Load() {
		select { // the next epoch's last look at our counters
		case <-s.handedOff:
		case <-time.After(2 * time.Second):
		}
	}
}

// ReopenLogs is SIGUSR1 and the admin's /reopen_logs: every access log
// file writes what it holds and opens its path again (log rotation).
func (s *Server) ReopenLogs() {
	s.logs.Reopen(5 * time.Second)
}

// FlushLogs writes what the access logs hold (tests, shutdown).
func (s *Server) FlushLogs() { s.logs.Flush(5 * time.Second) }

// DrainListeners is the admin's /drain_listeners: every listener (or the
// inbound ones) stops taking connections, at once or, graceful, after the
// drain time, and asks its connections to finish (HTTP/1.1: Connection:
// close on the next answer, idle ones closed after drain_timeout; HTTP/2:
// GOAWAY). /ready turns DRAINING. The process keeps running.
func (s *Server) DrainListeners(inboundOnly, graceful bool) {
	s.ready.Store(false)
	for _, l := range s.allListeners() {
		if inboundOnly && !l.Inbound {
			continue
		}
		if graceful {
			l.DrainGracefully(s.opts.DrainTime)
		} else {
			l.Drain()
		}
	}
}

// Ready implements admin.Source: serving, with its first xDS config
// warm (or timed out).
func (s *Server) Ready() bool {
	return s.ready.Load() && !s.initializing.Load() && !s.healthFailed.Load()
}

// ReadyState names the state for /ready: LIVE, INITIALIZING (waiting for
// the first xDS config) or DRAINING.
func (s *Server) ReadyState() string {
	switch {
	case s.Ready():
		return "LIVE"
	case s.ready.Load() && !s.healthFailed.Load():
		return "INITIALIZING"
	}
	return "DRAINING"
}

// ListenerAddr returns the bound address of the named listener.
func (s *Server) ListenerAddr(name string) net.Addr {
	for _, l := range s.listeners {
		if l.Name == name {
			return l.Addr()
		}
	}
	if s.dyn != nil {
		if a := s.dyn.listeners.Addr(name); a != nil {
			return a
		}
	}
	return nil
}

// StaticListenerNames lists the bootstrap's listeners by name (Strait's
// name for those that have none), in config order.
func (s *Server) StaticListenerNames() []string {
	out := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Name
	}
	return out
}

// Runtime implements admin's runtime source: the layered runtime.
func (s *Server) Runtime() *config.Runtime { return s.runtime }

// AdminAddr returns the admin server's bound address (nil without admin).
func (s *Server) AdminAddr() net.Addr { return s.admin.Addr() }

// Stats returns the stats store.
func (s *Server) Stats() *stats.Store { return s.store }

// Pool returns the worker pool.
func (s *Server) Pool() *network.Pool { return s.pool }

// newUUID returns a random (version 4) UUID, the name Envoy gives a
// listener that has none.
func newUUID() string {
	var b [16]byte
	crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
