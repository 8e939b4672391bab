package server

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/listener"
	"github.com/straitproxy/strait/tlsconfig"
	"github.com/straitproxy/strait/upstream"
	"github.com/straitproxy/strait/xds"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// dynamic is the glue between the xDS client and the managers that own
// what xDS drives: the cluster manager (CDS, EDS), the listener manager
// (LDS, RDS) and the secret store (SDS). Each manager applies an update
// per resource, as Envoy does, and returns the resources it refused; the
// glue NACKs with their reasons (the rest is ACKed in effect: it
// applied) and keeps them for the config dump's error_state. It also
// orders start-up as Envoy does: clusters warm on their endpoints before
// listeners are asked for, and /ready turns LIVE when the first listeners
// are warm (or each step's initial_fetch_timeout passed).
type dynamic struct {
	s         *Server
	src       *sources
	clusters  *upstream.Clusters
	listeners *listener.Manager
	secrets   *tlsconfig.Secrets
	// cdsSource, ldsSource are cds_config, lds_config (nil when unset).
	cdsSource, ldsSource *corev3.ConfigSource

	mu       sync.Mutex
	ldsAsked bool
	stopped  bool
	// failed are the resources the last update of each type refused, for
	// the config dump's error_state.
	failed map[string]map[string]*adminv3.UpdateFailureState
}

// maxLinger bounds how long a cluster CDS removed serves on while routes
// still name it.
const maxLinger = 15 * time.Second

// newDynamic makes the xDS clients and the managers; the cluster manager
// starts with the static clusters.
func newDynamic(s *Server, dr *bootstrapv3.Bootstrap_DynamicResources, static *upstream.Manager) (*dynamic, error) {
	d := &dynamic{s: s, cdsSource: dr.GetCdsConfig(), ldsSource: dr.GetLdsConfig(),
		secrets: s.secrets, failed: map[string]map[string]*adminv3.UpdateFailureState{}}
	d.src = &sources{d: d, clients: map[string]*xds.Client{}, sets: map[string]map[*xds.Client]map[string]*xds.Resource{}}
	if ads := dr.GetAdsConfig(); ads != nil {
		c, err := d.src.newClient(ads, "")
		if err != nil {
			return nil, err
		}
		d.src.ads = c
	}
	check := func(cs *corev3.ConfigSource) error { return checkSource(s.boot, cs) }
	d.clusters = upstream.NewClusters(static, s.store.Root(), s.log, upstream.ClustersOptions{
		CDS:            d.cdsSource != nil,
		WatchEndpoints: func(cs *corev3.ConfigSource, names []string) { d.src.watch(cs, xds.EndpointType, false, names) },
		CheckSource:    check,
		Initialized:    d.finishCDS,
		Linger:         min(s.opts.DrainTime, maxLinger),
		Secrets:        s.secrets,
		Node:           s.node(),
	})
	s.clusters = d.clusters // before the listener options take it
	s.secrets.SetSubscriber(func(cs *corev3.ConfigSource, names []string) { d.src.watch(cs, xds.SecretType, false, names) })
	o := s.listenerOptions(nil)
	o.CheckSource = check
	d.listeners = listener.NewManager(listener.ManagerOptions{
		Build:       o,
		DrainTime:   s.opts.DrainTime,
		LDS:         d.ldsSource != nil,
		WatchRoutes: func(cs *corev3.ConfigSource, names []string) { d.src.watch(cs, xds.RouteType, false, names) },
		WatchScopes: func(cs *corev3.ConfigSource, on bool) { d.src.watch(cs, xds.ScopedRouteType, on, nil) },
		WatchVirtualHosts: func(cs *corev3.ConfigSource, names []string) {
			d.src.watch(cs, xds.VirtualHostType, false, names)
		},
		AskVirtualHostsAgain: func(cs *corev3.ConfigSource, names []string) {
			if c := d.src.client(cs, xds.VirtualHostType); c != nil {
				c.Resubscribe(xds.VirtualHostType, names)
			}
		},
		CheckVHDS:   func(cs *corev3.ConfigSource) error { return checkDeltaSource(s.boot, cs) },
		Initialized: d.initDone,
	})
	s.secrets.SetChanged(func() {
		d.clusters.Recheck()
		d.listeners.Recheck()
	})
	return d, nil
}

// checkDynamic validates dynamic_resources: ads_config (if set) and the
// CDS and LDS config sources.
func checkDynamic(b *bootstrapv3.Bootstrap) error {
	dr := b.GetDynamicResources()
	var errs []error
	if err := supportedDynamic.Check(dr); err != nil {
		return config.At("dynamic_resources", err)
	}
	if ads := dr.GetAdsConfig(); ads != nil {
		if t := ads.GetApiType(); t != corev3.ApiConfigSource_GRPC && t != corev3.ApiConfigSource_DELTA_GRPC {
			errs = append(errs, config.At("dynamic_resources.ads_config.api_type", fmt.Errorf("%s is not supported (supported: GRPC, DELTA_GRPC)", t)))
		} else if err := checkAPISource(b, ads); err != nil {
			errs = append(errs, config.At("dynamic_resources.ads_config", err))
		}
	}
	for _, f := range []struct {
		path string
		cs   *corev3.ConfigSource
	}{{"lds_config", dr.GetLdsConfig()}, {"cds_config", dr.GetCdsConfig()}} {
		if f.cs == nil {
			continue
		}
		if err := checkSource(b, f.cs); err != nil {
			errs = append(errs, config.At("dynamic_resources."+f.path, err))
		}
	}
	if dr.GetLdsResourcesLocator() != "" || dr.GetCdsResourcesLocator() != "" {
		errs = append(errs, config.At("dynamic_resources", errors.New("xdstp resource locators are not supported")))
	}
	return config.Join(errs)
}

// fetchTimeout is a config source's initial_fetch_timeout (default 15 s;
// 0 waits for ever).
func fetchTimeout(cs *corev3.ConfigSource) time.Duration {
	if d := cs.GetInitialFetchTimeout(); d != nil {
		return d.AsDuration()
	}
	return 15 * time.Second
}

// version is the last accepted version_info of url from cs ("" when
// never subscribed).
func (d *dynamic) version(cs *corev3.ConfigSource, url string) string {
	if cs == nil {
		return ""
	}
	if c := d.src.client(cs, url); c != nil {
		return c.Version(url)
	}
	return ""
}

// start opens the xDS streams: CDS first; LDS once the clusters are warm.
func (d *dynamic) start() {
	d.src.start()
	d.listeners.WatchStaticRoutes()
	d.watchRuntime()
	if d.cdsSource == nil {
		d.finishCDS()
		return
	}
	d.src.watch(d.cdsSource, xds.ClusterType, true, nil)
	if t := fetchTimeout(d.cdsSource); t > 0 {
		time.AfterFunc(t, d.clusters.InitTimeout)
	}
}

// watchRuntime subscribes to the RTDS layers' resources, by source.
func (d *dynamic) watchRuntime() {
	bySource := map[string][]string{}
	sources := map[string]*corev3.ConfigSource{}
	for name, l := range d.s.rtLayers.rtds {
		k := config.SourceKey(l.source)
		bySource[k] = append(bySource[k], name)
		sources[k] = l.source
	}
	for k, names := range bySource {
		slices.Sort(names)
		d.src.watch(sources[k], xds.RuntimeType, false, names)
	}
}

// finishCDS asks for listeners, once: the first clusters are warm, or
// their initial fetch timed out.
func (d *dynamic) finishCDS() {
	if d.ldsSource == nil {
		d.initDone()
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ldsAsked || d.stopped {
		return
	}
	d.ldsAsked = true
	d.src.watch(d.ldsSource, xds.ListenerType, true, nil)
	if t := fetchTimeout(d.ldsSource); t > 0 {
		time.AfterFunc(t, d.listeners.InitTimeout)
	}
}

// initDone ends initialization: the first clusters and listeners are
// warm, or their initial_fetch_timeout passed; /ready turns LIVE.
func (d *dynamic) initDone() { d.s.initializing.Store(false) }

func (d *dynamic) stop() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	d.listeners.Stop()
	d.src.stop()
}

// clustersInUse are the clusters the listeners and routes name now,
// static ones included: a cluster CDS removes serves on while they do.
func (d *dynamic) clustersInUse() map[string]bool {
	names := d.listeners.ClusterNames()
	for _, l := range d.s.boot.GetStaticResources().GetListeners() {
		config.ClusterNames(l, names)
	}
	return names
}

// applyType has the manager of url apply the complete set; it returns
// the resources refused, by name.
func (d *dynamic) applyType(url string, set map[string]*xds.Resource) (map[string]error, error) {
	d.mu.Lock()
	stopped := d.stopped
	d.mu.Unlock()
	if stopped {
		return nil, errors.New("shutting down")
	}
	switch url {
	case xds.ClusterType:
		return d.clusters.ApplyCDS(set, d.clustersInUse()), nil
	case xds.EndpointType:
		return d.clusters.ApplyEDS(set), nil
	case xds.ListenerType:
		refused := d.listeners.ApplyLDS(set)
		d.clusters.Release(d.clustersInUse())
		return refused, nil
	case xds.RouteType:
		refused := d.listeners.ApplyRDS(set)
		d.clusters.Release(d.clustersInUse())
		return refused, nil
	case xds.SecretType:
		return d.secrets.Apply(set), nil
	case xds.RuntimeType:
		return d.applyRTDS(set), nil
	case xds.VirtualHostType:
		refused := d.listeners.ApplyVHDS(set)
		d.clusters.Release(d.clustersInUse())
		return refused, nil
	case xds.ScopedRouteType:
		refused := d.listeners.ApplySRDS(set)
		d.clusters.Release(d.clustersInUse())
		return refused, nil
	}
	return nil, fmt.Errorf("unsupported type %s", url)
}

// record keeps each refusal for the config dump (error_state shows the
// last update's) and joins them into the NACK.
func (d *dynamic) record(url string, set map[string]*xds.Resource, refused map[string]error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := map[string]*adminv3.UpdateFailureState{}
	d.failed[url] = m
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(refused)) {
		r, err := set[name], refused[name]
		m[name] = &adminv3.UpdateFailureState{FailedConfiguration: r.Any, LastUpdateAttempt: timestamppb.Now(),
			Details: err.Error(), VersionInfo: r.Version}
		errs = append(errs, &xds.ResourceError{Name: name, Err: err})
	}
	return errors.Join(errs...)
}
