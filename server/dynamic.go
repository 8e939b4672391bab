package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/listener"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/upstream"
	"github.com/straitproxy/strait/xds"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// dynamic is the part of the configuration that xDS drives. Every update
// is built with the same builders as the static file, all or nothing: a
// resource that fails to build refuses the whole response (NACK) and
// nothing changes. Order follows Envoy: clusters (CDS) warm on their
// endpoints (EDS) before listeners are asked for (LDS); a listener warms
// on its route configurations (RDS) before it opens or replaces the
// version serving. Everything below mu is touched by the xDS client's
// goroutine (Apply) and by warming timers.
type dynamic struct {
	s      *Server
	client *xds.Client
	lds    bool // lds_config is set
	cds    bool // cds_config is set
	// fetchTimeout is the CDS and LDS initial_fetch_timeout.
	cdsTimeout, ldsTimeout time.Duration

	mu       sync.Mutex
	clusters map[string]*dynCluster // CDS, active
	warmingC map[string]*dynCluster
	cla      map[string]*xds.Resource
	claGone  map[string]bool // assignments that timed out: absent, accepted later
	// cdsDone: the first CDS response and its warming are over, LDS may
	// be asked for.
	cdsDone   bool
	ldsAsked  bool
	listeners map[string]*dynListener // LDS, active
	warmingL  map[string]*dynListener
	routes    map[string]*routeEntry
	secrets   map[string]*xds.Resource
	retiring  map[*listener.Listener]bool
	retiredC  []*upstream.Cluster
	// failed are the resources the last refused update of each type
	// could not build, for the config dump's error_state.
	failed map[string]map[string]*adminv3.UpdateFailureState

	ldsCreateFail *stats.Counter
	stopped       bool
	ldsApplied    bool // a first LDS response was accepted
	initialized   bool
}

type dynCluster struct {
	res   *xds.Resource
	c     *upstream.Cluster
	timer *time.Timer
}

type dynListener struct {
	res   *xds.Resource
	l     *listener.Listener
	subs  []*routeSub
	timer *time.Timer
	// timedOut: its routes' initial fetch timed out; it opens without them.
	timedOut bool
}

type routeEntry struct {
	res  *xds.Resource
	subs map[*routeSub]bool
}

type routeSub struct {
	name    string
	timeout time.Duration
	update  filter.RouteUpdate
}

func newDynamic(s *Server, dr *bootstrapv3.Bootstrap_DynamicResources) (*dynamic, error) {
	d := &dynamic{s: s, lds: dr.GetLdsConfig() != nil, cds: dr.GetCdsConfig() != nil,
		cdsTimeout: fetchTimeout(dr.GetCdsConfig()), ldsTimeout: fetchTimeout(dr.GetLdsConfig()),
		clusters: map[string]*dynCluster{}, warmingC: map[string]*dynCluster{}, cla: map[string]*xds.Resource{},
		claGone: map[string]bool{}, listeners: map[string]*dynListener{}, warmingL: map[string]*dynListener{},
		routes: map[string]*routeEntry{}, secrets: map[string]*xds.Resource{}, retiring: map[*listener.Listener]bool{},
		failed: map[string]map[string]*adminv3.UpdateFailureState{}}
	d.ldsCreateFail = s.store.Root().Scope("listener_manager", "", "").Counter("listener_create_failure")
	ads := dr.GetAdsConfig()
	name := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	c, err := xds.New(xds.Options{
		Node:    s.node(),
		Delta:   ads.GetApiType() == corev3.ApiConfigSource_DELTA_GRPC,
		Dial:    func(ctx context.Context) (net.Conn, error) { return s.dialStatic(ctx, name) },
		Handler: d,
		Log:     s.log,
		Stats:   s.store.Root(),
	})
	if err != nil {
		return nil, err
	}
	d.client = c
	return d, nil
}

func fetchTimeout(cs *corev3.ConfigSource) time.Duration {
	if d := cs.GetInitialFetchTimeout(); d != nil {
		return d.AsDuration()
	}
	return 15 * time.Second
}

// checkDynamic validates dynamic_resources: ADS over gRPC to a static
// cluster; every config source is ads.
func checkDynamic(b *bootstrapv3.Bootstrap) error {
	dr := b.GetDynamicResources()
	var errs []error
	ads := dr.GetAdsConfig()
	if ads == nil {
		return config.At("dynamic_resources.ads_config", errors.New("required: Strait gets xDS over ADS only"))
	}
	switch ads.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_DELTA_GRPC:
	default:
		errs = append(errs, config.At("dynamic_resources.ads_config.api_type", fmt.Errorf("%s is not supported (supported: GRPC, DELTA_GRPC)", ads.GetApiType())))
	}
	if ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		errs = append(errs, config.At("dynamic_resources.ads_config.transport_api_version", errors.New("must be V3")))
	}
	if len(ads.GetGrpcServices()) != 1 || ads.GetGrpcServices()[0].GetEnvoyGrpc() == nil {
		errs = append(errs, config.At("dynamic_resources.ads_config.grpc_services", errors.New("exactly one envoy_grpc service is required")))
	} else {
		name := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
		found := false
		for _, c := range b.GetStaticResources().GetClusters() {
			found = found || c.GetName() == name
		}
		if !found {
			errs = append(errs, config.At("dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name",
				fmt.Errorf("%q is not a static cluster", name)))
		}
	}
	for _, f := range []struct {
		path string
		cs   *corev3.ConfigSource
	}{{"lds_config", dr.GetLdsConfig()}, {"cds_config", dr.GetCdsConfig()}} {
		if f.cs != nil && f.cs.GetAds() == nil {
			errs = append(errs, config.At("dynamic_resources."+f.path, errors.New("only ads: {} is supported")))
		}
	}
	if dr.GetLdsResourcesLocator() != "" || dr.GetCdsResourcesLocator() != "" {
		errs = append(errs, config.At("dynamic_resources", errors.New("xdstp resource locators are not supported")))
	}
	return config.Join(errs)
}

// start opens the ADS stream: CDS first; LDS once the clusters are warm.
func (d *dynamic) start() {
	d.client.Start()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.routesChanged() // static listeners' RDS
	if d.cds {
		d.client.Watch(xds.ClusterType, true, nil)
		if d.cdsTimeout > 0 {
			time.AfterFunc(d.cdsTimeout, func() {
				d.mu.Lock()
				defer d.mu.Unlock()
				d.finishCDS()
			})
		}
	} else {
		d.finishCDS()
	}
}

// finishCDS asks for listeners once (mu held).
func (d *dynamic) finishCDS() {
	d.cdsDone = true
	if !d.lds {
		d.initDone()
		return
	}
	if !d.ldsAsked && !d.stopped {
		d.ldsAsked = true
		d.client.Watch(xds.ListenerType, true, nil)
		if d.ldsTimeout > 0 {
			time.AfterFunc(d.ldsTimeout, func() {
				d.mu.Lock()
				defer d.mu.Unlock()
				d.initDone()
			})
		}
	}
}

// initDone ends initialization (mu held): the first clusters and
// listeners are warm, or their initial_fetch_timeout passed; /ready
// turns LIVE.
func (d *dynamic) initDone() {
	if !d.initialized {
		d.initialized = true
		d.s.initializing.Store(false)
	}
}

// checkInit ends initialization once the first LDS response's listeners
// are all warm (mu held).
func (d *dynamic) checkInit() {
	if d.ldsApplied && len(d.warmingL) == 0 {
		d.initDone()
	}
}

func (d *dynamic) stop() {
	d.mu.Lock()
	d.stopped = true
	for _, w := range d.warmingL {
		stopTimer(w.timer)
	}
	for _, w := range d.warmingC {
		stopTimer(w.timer)
	}
	d.mu.Unlock()
	d.client.Stop()
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// Apply implements xds.Handler.
func (d *dynamic) Apply(url string, set map[string]*xds.Resource) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return errors.New("shutting down")
	}
	clear(d.failed[url]) // error_state shows the last attempt's failures
	var err error
	switch url {
	case xds.ClusterType:
		if err = d.applyClusters(set); err != nil && !d.cdsDone {
			// As Envoy: a refused first response does not hold start-up
			// back (the static config serves; a good version follows).
			d.finishCDS()
		}
	case xds.EndpointType:
		err = d.applyEndpoints(set)
	case xds.ListenerType:
		if err = d.applyListeners(set); err != nil {
			d.initDone()
		}
	case xds.RouteType:
		err = d.applyRoutes(set)
	case xds.SecretType:
		err = d.applySecrets(set)
	default:
		err = fmt.Errorf("unsupported type %s", url)
	}
	return err
}

// reject records why a resource could not be built (mu held) and returns
// the error.
func (d *dynamic) reject(url string, r *xds.Resource, err error) error {
	m := d.failed[url]
	if m == nil {
		m = map[string]*adminv3.UpdateFailureState{}
		d.failed[url] = m
	}
	m[r.Name] = &adminv3.UpdateFailureState{FailedConfiguration: r.Any, LastUpdateAttempt: timestamppb.Now(),
		Details: err.Error(), VersionInfo: r.Version}
	return err
}

// ---- clusters ----

func (d *dynamic) current(name string) *dynCluster {
	if w := d.warmingC[name]; w != nil {
		return w
	}
	return d.clusters[name]
}

func (d *dynamic) applyClusters(set map[string]*xds.Resource) error {
	var errs []error
	fresh := map[string]*dynCluster{}
	for _, name := range sortedKeys(set) {
		r := set[name]
		if _, ok := d.s.static[name]; ok {
			errs = append(errs, d.reject(xds.ClusterType, r, fmt.Errorf("cluster %q: a static cluster has this name", name)))
			continue
		}
		if cur := d.current(name); cur != nil && proto.Equal(cur.res.Message, r.Message) {
			continue
		}
		c, err := upstream.BuildCluster(r.Message.(*clusterv3.Cluster), d.s.store.Root(), d.s.log)
		if err != nil {
			errs = append(errs, d.reject(xds.ClusterType, r, fmt.Errorf("cluster %q: %w", name, err)))
			continue
		}
		if c.EDSName != "" {
			if cla := d.cla[c.EDSName]; cla != nil {
				a, err := c.PrepareAssignment(cla.Message.(*endpointv3.ClusterLoadAssignment))
				if err != nil {
					errs = append(errs, d.reject(xds.ClusterType, r, fmt.Errorf("cluster %q: its endpoints %q: %w", name, c.EDSName, err)))
					c.Stop()
					continue
				}
				c.ApplyAssignment(a)
			}
		}
		fresh[name] = &dynCluster{res: r, c: c}
	}
	if len(errs) > 0 {
		for _, f := range fresh {
			f.c.Stop()
			d.forgetIfGone(f.c)
		}
		return errors.Join(errs...)
	}
	var gone []*upstream.Cluster
	for name, dc := range d.clusters {
		if set[name] == nil {
			delete(d.clusters, name)
			gone = append(gone, dc.c)
		}
	}
	for name, w := range d.warmingC {
		if set[name] == nil || fresh[name] != nil {
			stopTimer(w.timer)
			w.c.Stop()
			delete(d.warmingC, name)
		}
	}
	for _, name := range sortedKeys(fresh) {
		dc := fresh[name]
		if dc.c.Resolves() {
			// A DNS cluster warms until its first answers (5 s at most),
			// so that an update never leaves it without hosts.
			d.warmingC[name] = dc
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				dc.c.Start(ctx)
				cancel()
				d.mu.Lock()
				defer d.mu.Unlock()
				if d.warmingC[name] == dc && !d.stopped {
					d.activateCluster(dc)
					d.clustersChanged()
				}
			}()
			continue
		}
		if dc.c.HasEndpoints() || d.claGone[dc.c.EDSName] {
			d.activateCluster(dc)
			continue
		}
		d.warmingC[name] = dc
		if t := dc.c.EDSFetchTimeout; t > 0 {
			dc.timer = time.AfterFunc(t, func() {
				d.mu.Lock()
				defer d.mu.Unlock()
				if d.warmingC[name] == dc && !d.stopped {
					d.s.log.Warn("EDS initial fetch timed out; cluster in use without endpoints", "cluster", name, "eds", dc.c.EDSName)
					d.claGone[dc.c.EDSName] = true
					d.activateCluster(dc)
					d.clustersChanged()
				}
			})
		}
	}
	d.retiredC = append(d.retiredC, gone...)
	d.clustersChanged()
	if !d.cdsDone {
		if len(d.warmingC) == 0 {
			d.finishCDS()
		}
	}
	return nil
}

// forgetIfGone drops a stopped cluster's stats when no cluster of its
// name is left, static, active or warming (mu held): a removed cluster's
// stats go, as in Envoy, while an updated one's carry on.
func (d *dynamic) forgetIfGone(c *upstream.Cluster) {
	if d.clusters[c.Name] != nil || d.warmingC[c.Name] != nil {
		return
	}
	for _, sc := range d.s.static {
		if sc.Name == c.Name {
			return
		}
	}
	c.ForgetStats()
}

// activateCluster moves a warm cluster into service (mu held); the one it
// replaces stops once the new manager is in place (clustersChanged).
func (d *dynamic) activateCluster(dc *dynCluster) {
	name := dc.c.Name
	if d.warmingC[name] == dc {
		delete(d.warmingC, name)
	}
	stopTimer(dc.timer)
	old := d.clusters[name]
	d.clusters[name] = dc
	if old != nil {
		d.retiredC = append(d.retiredC, old.c)
	}
}

// clustersChanged rebuilds the cluster manager from the static clusters
// and the active dynamic ones, swaps it in, and subscribes to the
// endpoints that clusters wait for (mu held).
func (d *dynamic) clustersChanged() {
	all := make([]*upstream.Cluster, 0, len(d.s.static)+len(d.clusters))
	for _, c := range d.s.static {
		all = append(all, c)
	}
	for _, dc := range d.clusters {
		all = append(all, dc.c)
	}
	d.s.clusters.m.Store(upstream.NewManager(all))
	for _, c := range d.retiredC {
		c.Stop() // in-flight requests finish on the connections they hold
		d.forgetIfGone(c)
	}
	d.retiredC = nil
	names := map[string]bool{}
	for _, m := range []map[string]*dynCluster{d.clusters, d.warmingC} {
		for _, dc := range m {
			if dc.c.EDSName != "" {
				names[dc.c.EDSName] = true
			}
		}
	}
	for n := range d.cla {
		if !names[n] {
			delete(d.cla, n)
			delete(d.claGone, n)
		}
	}
	d.client.Watch(xds.EndpointType, false, sortedKeys(names))
	if !d.cdsDone && len(d.warmingC) == 0 && d.cds {
		// Warming ended by timeouts.
		d.finishCDS()
	}
}

func (d *dynamic) applyEndpoints(set map[string]*xds.Resource) error {
	type job struct {
		c *upstream.Cluster
		a *upstream.Assignment
	}
	var jobs []job
	var errs []error
	for _, name := range sortedKeys(set) {
		r := set[name]
		if d.cla[name] == r {
			continue // unchanged
		}
		for _, m := range []map[string]*dynCluster{d.clusters, d.warmingC} {
			for _, cn := range sortedKeys(m) {
				c := m[cn].c
				if c.EDSName != name {
					continue
				}
				a, err := c.PrepareAssignment(r.Message.(*endpointv3.ClusterLoadAssignment))
				if err != nil {
					errs = append(errs, fmt.Errorf("cluster load assignment %q: %w", name, err))
					continue
				}
				jobs = append(jobs, job{c, a})
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	var empty []*upstream.Cluster
	for name := range d.cla {
		if set[name] == nil {
			// Removed (delta): its clusters lose their endpoints.
			for _, m := range []map[string]*dynCluster{d.clusters, d.warmingC} {
				for _, dc := range m {
					if dc.c.EDSName == name {
						empty = append(empty, dc.c)
					}
				}
			}
		}
	}
	for _, j := range jobs {
		j.c.ApplyAssignment(j.a)
	}
	for _, c := range empty {
		a, _ := c.PrepareAssignment(&endpointv3.ClusterLoadAssignment{ClusterName: c.EDSName})
		c.ApplyAssignment(a)
	}
	d.cla = map[string]*xds.Resource{}
	for k, v := range set {
		d.cla[k] = v
		delete(d.claGone, k)
	}
	warmed := false
	for _, name := range sortedKeys(d.warmingC) {
		// (A DNS cluster is put in service by its first lookup only.)
		if dc := d.warmingC[name]; !dc.c.Resolves() && dc.c.HasEndpoints() {
			d.activateCluster(dc)
			warmed = true
		}
	}
	if warmed {
		d.clustersChanged()
	}
	return nil
}

// ---- listeners ----

// routeRecorder is the RDS source a listener is built with: it records
// the listener's subscriptions, and builds each with the route
// configuration already known (mu held by the caller of Build).
type routeRecorder struct {
	d    *dynamic
	subs []*routeSub
}

func (r *routeRecorder) Subscribe(name string, timeout time.Duration, update filter.RouteUpdate) error {
	sub := &routeSub{name: name, timeout: timeout, update: update}
	if e := r.d.routes[name]; e != nil && e.res != nil {
		commit, err := update(e.res.Message.(*routev3.RouteConfiguration))
		if err != nil {
			return fmt.Errorf("route configuration %q: %w", name, err)
		}
		commit()
	}
	r.subs = append(r.subs, sub)
	return nil
}

func (d *dynamic) applyListeners(set map[string]*xds.Resource) error {
	var errs []error
	fresh := map[string]*dynListener{}
	// addrs: who keeps serving each address after this update.
	addrs := map[string]string{}
	for _, l := range d.s.staticListeners {
		addrs[l.ConfiguredAddress()] = l.Name
	}
	for name, r := range set {
		if cur := d.currentListener(name); cur != nil && proto.Equal(cur.res.Message, r.Message) {
			addrs[cur.l.ConfiguredAddress()] = name
		}
	}
	for _, name := range sortedKeys(set) {
		r := set[name]
		cfg := r.Message.(*listenerv3.Listener)
		if d.s.staticNames[name] {
			errs = append(errs, d.reject(xds.ListenerType, r, fmt.Errorf("listener %q: a static listener has this name", name)))
			continue
		}
		if cur := d.currentListener(name); cur != nil && proto.Equal(cur.res.Message, cfg) {
			continue
		}
		rec := &routeRecorder{d: d}
		l, err := listener.Build(cfg, d.s.listenerOptions(rec))
		if err != nil {
			errs = append(errs, d.reject(xds.ListenerType, r, fmt.Errorf("listener %q: %w", name, err)))
			continue
		}
		dl := &dynListener{res: r, l: l, subs: rec.subs}
		a := l.ConfiguredAddress()
		if _, port, _ := net.SplitHostPort(a); port != "0" {
			if other, dup := addrs[a]; dup && other != name {
				errs = append(errs, d.reject(xds.ListenerType, r, fmt.Errorf("listener %q: address %s is used by listener %q", name, a, other)))
				continue
			}
			addrs[a] = name
			if err := d.bindFree(name, a, l, set); err != nil {
				errs = append(errs, d.reject(xds.ListenerType, r, fmt.Errorf("listener %q: %w", name, err)))
				continue
			}
		}
		fresh[name] = dl
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for name, dl := range d.listeners {
		if set[name] == nil {
			delete(d.listeners, name)
			d.unsubscribe(dl)
			d.retire(dl.l)
		}
	}
	for name, w := range d.warmingL {
		if set[name] == nil || fresh[name] != nil {
			stopTimer(w.timer)
			d.unsubscribe(w)
			delete(d.warmingL, name)
		}
	}
	for _, name := range sortedKeys(fresh) {
		dl := fresh[name]
		for _, sub := range dl.subs {
			e := d.routes[sub.name]
			if e == nil {
				e = &routeEntry{subs: map[*routeSub]bool{}}
				d.routes[sub.name] = e
			}
			e.subs[sub] = true
		}
		d.warmingL[name] = dl
		if t := dl.fetchTimeout(); t > 0 {
			dl.timer = time.AfterFunc(t, func() {
				d.mu.Lock()
				defer d.mu.Unlock()
				if d.warmingL[name] == dl && !d.stopped {
					d.s.log.Warn("RDS initial fetch timed out; listener opens without its routes (404 until they arrive)", "listener", name)
					dl.timedOut = true
					d.activateListener(dl)
					d.checkInit()
				}
			})
		}
	}
	d.ldsApplied = true
	d.routesChanged()
	d.activateWarmListeners()
	d.checkInit()
	return nil
}

// bindFree checks that a listener's address can be bound: its own
// serving version's address is taken over; the address of a listener
// this update removes is freed when it drains; an address another
// listener keeps serving is refused; any other address is test-bound.
func (d *dynamic) bindFree(name, addr string, l *listener.Listener, set map[string]*xds.Resource) error {
	for other, dl := range d.listeners {
		if dl.l.ConfiguredAddress() != addr {
			continue
		}
		if other == name || set[other] == nil {
			return nil
		}
		return fmt.Errorf("address %s is in use by listener %q", addr, other)
	}
	return l.CheckBind()
}

func (d *dynamic) currentListener(name string) *dynListener {
	if w := d.warmingL[name]; w != nil {
		return w
	}
	return d.listeners[name]
}

// fetchTimeout is the longest initial_fetch_timeout of the listener's
// route subscriptions (0 when one has none: wait for ever).
func (dl *dynListener) fetchTimeout() time.Duration {
	var t time.Duration
	for _, s := range dl.subs {
		if s.timeout == 0 {
			return 0
		}
		t = max(t, s.timeout)
	}
	return t
}

func (d *dynamic) warm(dl *dynListener) bool {
	if dl.timedOut {
		return true
	}
	for _, s := range dl.subs {
		if e := d.routes[s.name]; e == nil || e.res == nil {
			return false
		}
	}
	return true
}

func (d *dynamic) activateWarmListeners() {
	for _, name := range sortedKeys(d.warmingL) {
		if dl := d.warmingL[name]; d.warm(dl) {
			d.activateListener(dl)
		}
	}
}

// activateListener puts a warm listener in service (mu held): it takes
// over the socket of the version it replaces when the address and I/O
// model are the same (old connections drain), else the old one drains
// and the new one binds.
func (d *dynamic) activateListener(dl *dynListener) {
	name := dl.l.Name
	delete(d.warmingL, name)
	stopTimer(dl.timer)
	old := d.listeners[name]
	switch {
	case old != nil && dl.l.CanTakeOver(old.l):
		dl.l.TakeOver(old.l)
		d.retireDrained(old.l)
	default:
		if old != nil {
			d.retire(old.l)
		}
		if err := dl.l.Start(context.Background()); err != nil {
			d.ldsCreateFail.Inc()
			d.s.log.Error("listener could not open", "listener", name, "err", err)
			d.unsubscribe(dl)
			if old != nil {
				d.unsubscribe(old)
			}
			delete(d.listeners, name)
			d.routesChanged()
			d.checkInit()
			return
		}
	}
	if old != nil {
		d.unsubscribe(old)
	}
	d.listeners[name] = dl
	d.s.log.Info("listening", "listener", name, "address", dl.l.Addr().String(), "version", dl.res.Version)
	d.routesChanged()
	d.checkInit()
}

// retire drains a listener that left; it is closed when its connections
// are done or the drain time passes.
func (d *dynamic) retire(l *listener.Listener) {
	l.Drain()
	d.retireDrained(l)
}

func (d *dynamic) retireDrained(l *listener.Listener) {
	d.retiring[l] = true
	go func() {
		deadline := time.Now().Add(d.s.opts.DrainTime)
		for l.Active() > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		l.Close()
		d.mu.Lock()
		delete(d.retiring, l)
		d.mu.Unlock()
	}()
}

func (d *dynamic) unsubscribe(dl *dynListener) {
	for _, s := range dl.subs {
		if e := d.routes[s.name]; e != nil {
			delete(e.subs, s)
		}
	}
}

// routesChanged subscribes to exactly the route configurations that
// listeners use (mu held).
func (d *dynamic) routesChanged() {
	var names []string
	for name, e := range d.routes {
		if len(e.subs) == 0 {
			delete(d.routes, name)
			continue
		}
		names = append(names, name)
	}
	sort.Strings(names)
	if d.lds || len(names) > 0 {
		d.client.Watch(xds.RouteType, false, names)
	}
}

func (d *dynamic) applyRoutes(set map[string]*xds.Resource) error {
	var commits []func()
	var errs []error
	for _, name := range sortedKeys(set) {
		r := set[name]
		e := d.routes[name]
		if e == nil || e.res == r {
			continue
		}
		rc := r.Message.(*routev3.RouteConfiguration)
		if errs2 := config.ValidationErrors(rc.ValidateAll()); len(errs2) > 0 {
			errs = append(errs, d.reject(xds.RouteType, r, fmt.Errorf("route configuration %q: %w", name, config.Join(errs2))))
			continue
		}
		for sub := range e.subs {
			commit, err := sub.update(rc)
			if err != nil {
				errs = append(errs, d.reject(xds.RouteType, r, fmt.Errorf("route configuration %q: %w", name, err)))
				break
			}
			commits = append(commits, commit)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, c := range commits {
		c()
	}
	for name, e := range d.routes {
		if r := set[name]; r != nil {
			e.res = r
		} else if e.res != nil {
			// Removed (delta): its listeners route nothing.
			e.res = nil
			for sub := range e.subs {
				if commit, err := sub.update(nil); err == nil {
					commit()
				}
			}
		}
	}
	d.activateWarmListeners()
	return nil
}

// register adds a static listener's route subscriptions (before start).
func (d *dynamic) register(subs []*routeSub) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, sub := range subs {
		e := d.routes[sub.name]
		if e == nil {
			e = &routeEntry{subs: map[*routeSub]bool{}}
			d.routes[sub.name] = e
		}
		e.subs[sub] = true
	}
}

// ---- secrets ----

// applySecrets validates and stores SDS secrets. TLS contexts (a later
// issue) will read them; until then they are kept and shown, redacted, in
// the config dump.
func (d *dynamic) applySecrets(set map[string]*xds.Resource) error {
	var errs []error
	for _, name := range sortedKeys(set) {
		if err := checkSecret(set[name].Message.(*tlsv3.Secret)); err != nil {
			errs = append(errs, fmt.Errorf("secret %q: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	d.secrets = set
	return nil
}

// checkSecret refuses a secret that a TLS context could not load: a
// certificate without its key (or the reverse), PEM that does not parse,
// a key that does not match its certificate, a CA bundle with no
// certificate. Files are read when given by name.
func checkSecret(sec *tlsv3.Secret) error {
	if errs := config.ValidationErrors(sec.ValidateAll()); len(errs) > 0 {
		return config.Join(errs)
	}
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		tc := t.TlsCertificate
		cert, err := dataSource(tc.GetCertificateChain())
		if err != nil {
			return config.At("tls_certificate.certificate_chain", err)
		}
		key, err := dataSource(tc.GetPrivateKey())
		if err != nil {
			return config.At("tls_certificate.private_key", err)
		}
		if cert == nil || key == nil {
			return config.At("tls_certificate", errors.New("certificate_chain and private_key are both required"))
		}
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			return config.At("tls_certificate", err)
		}
	case *tlsv3.Secret_ValidationContext:
		ca, err := dataSource(t.ValidationContext.GetTrustedCa())
		if err != nil {
			return config.At("validation_context.trusted_ca", err)
		}
		if ca != nil && !x509.NewCertPool().AppendCertsFromPEM(ca) {
			return config.At("validation_context.trusted_ca", errors.New("no PEM certificate found"))
		}
	case nil:
		return errors.New("a secret needs a type (tls_certificate or validation_context)")
	default:
		return fmt.Errorf("secret type %T is not supported (supported: tls_certificate, validation_context)", t)
	}
	return nil
}

// dataSource reads an inline or file data source (nil when unset).
func dataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case nil:
		return nil, nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		return os.ReadFile(s.Filename)
	}
	return nil, fmt.Errorf("unsupported data source")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// dump adds the dynamic resources to Envoy's config dump shapes: active
// and warming clusters and listeners (and draining listeners), then the
// route, endpoint and secret dumps.
func (d *dynamic) dump(cs *adminv3.ClustersConfigDump, ls *adminv3.ListenersConfigDump) []proto.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	cs.VersionInfo = d.client.Version(xds.ClusterType)
	ls.VersionInfo = d.client.Version(xds.ListenerType)
	dc := func(r *xds.Resource) *adminv3.ClustersConfigDump_DynamicCluster {
		return &adminv3.ClustersConfigDump_DynamicCluster{VersionInfo: r.Version, Cluster: r.Any, LastUpdated: timestamppb.New(r.Updated)}
	}
	for _, name := range sortedKeys(d.clusters) {
		e := dc(d.clusters[name].res)
		e.ErrorState = d.failed[xds.ClusterType][name]
		cs.DynamicActiveClusters = append(cs.DynamicActiveClusters, e)
	}
	for _, name := range sortedKeys(d.failed[xds.ClusterType]) {
		if d.clusters[name] == nil {
			// A cluster never accepted: its entry carries only the error.
			cs.DynamicActiveClusters = append(cs.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
				ErrorState: d.failed[xds.ClusterType][name]})
		}
	}
	for _, name := range sortedKeys(d.warmingC) {
		cs.DynamicWarmingClusters = append(cs.DynamicWarmingClusters, dc(d.warmingC[name].res))
	}
	state := func(r *xds.Resource) *adminv3.ListenersConfigDump_DynamicListenerState {
		return &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: r.Version, Listener: r.Any, LastUpdated: timestamppb.New(r.Updated)}
	}
	names := map[string]bool{}
	for n := range d.listeners {
		names[n] = true
	}
	for n := range d.warmingL {
		names[n] = true
	}
	for n := range d.failed[xds.ListenerType] {
		names[n] = true
	}
	for _, name := range sortedKeys(names) {
		dl := &adminv3.ListenersConfigDump_DynamicListener{Name: name, ErrorState: d.failed[xds.ListenerType][name]}
		if a := d.listeners[name]; a != nil {
			dl.ActiveState = state(a.res)
		}
		if w := d.warmingL[name]; w != nil {
			dl.WarmingState = state(w.res)
		}
		ls.DynamicListeners = append(ls.DynamicListeners, dl)
	}
	rs := &adminv3.RoutesConfigDump{}
	for _, name := range sortedKeys(d.routes) {
		fail := d.failed[xds.RouteType][name]
		if r := d.routes[name].res; r != nil {
			rs.DynamicRouteConfigs = append(rs.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
				VersionInfo: r.Version, RouteConfig: r.Any, LastUpdated: timestamppb.New(r.Updated), ErrorState: fail})
		} else if fail != nil {
			rs.DynamicRouteConfigs = append(rs.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{ErrorState: fail})
		}
	}
	es := &adminv3.EndpointsConfigDump{}
	for _, name := range sortedKeys(d.cla) {
		r := d.cla[name]
		es.DynamicEndpointConfigs = append(es.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: r.Version, EndpointConfig: r.Any, LastUpdated: timestamppb.New(r.Updated)})
	}
	ss := &adminv3.SecretsConfigDump{}
	for _, name := range sortedKeys(d.secrets) {
		r := d.secrets[name]
		ss.DynamicActiveSecrets = append(ss.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
			Name: name, VersionInfo: r.Version, Secret: r.Any, LastUpdated: timestamppb.New(r.Updated)})
	}
	return []proto.Message{rs, es, ss}
}
