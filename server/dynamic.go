package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
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
	client    *xds.Client
	clusters  *upstream.Clusters
	listeners *listener.Manager
	secrets   *tlsconfig.Secrets
	lds, cds  bool // lds_config, cds_config are set
	// cdsTimeout, ldsTimeout are the initial_fetch_timeouts.
	cdsTimeout, ldsTimeout time.Duration

	mu       sync.Mutex
	ldsAsked bool
	stopped  bool
	// failed are the resources the last update of each type refused, for
	// the config dump's error_state.
	failed map[string]map[string]*adminv3.UpdateFailureState
}

// newDynamic makes the xDS client and the managers; the cluster manager
// starts with the static clusters.
func newDynamic(s *Server, dr *bootstrapv3.Bootstrap_DynamicResources, static *upstream.Manager) (*dynamic, error) {
	d := &dynamic{s: s, lds: dr.GetLdsConfig() != nil, cds: dr.GetCdsConfig() != nil,
		cdsTimeout: fetchTimeout(dr.GetCdsConfig()), ldsTimeout: fetchTimeout(dr.GetLdsConfig()),
		secrets: tlsconfig.NewSecrets(), failed: map[string]map[string]*adminv3.UpdateFailureState{}}
	ads := dr.GetAdsConfig()
	name := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	c, err := xds.New(xds.Options{
		Node:               s.node(),
		NodeOnEveryRequest: !ads.GetSetNodeOnFirstMessageOnly(),
		Delta:              ads.GetApiType() == corev3.ApiConfigSource_DELTA_GRPC,
		Dial:               func(ctx context.Context) (net.Conn, error) { return s.dialStatic(ctx, name) },
		Handler:            d,
		Log:                s.log,
		Stats:              s.store.Root(),
	})
	if err != nil {
		return nil, err
	}
	d.client = c
	d.clusters = upstream.NewClusters(static, s.store.Root(), s.log, upstream.ClustersOptions{
		CDS:            d.cds,
		WatchEndpoints: func(names []string) { c.Watch(xds.EndpointType, false, names) },
		Initialized:    d.finishCDS,
	})
	s.clusters = d.clusters // before the listener options take it
	d.listeners = listener.NewManager(listener.ManagerOptions{
		Build:       s.listenerOptions(nil),
		DrainTime:   s.opts.DrainTime,
		LDS:         d.lds,
		WatchRoutes: func(names []string) { c.Watch(xds.RouteType, false, names) },
		Initialized: d.initDone,
	})
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
	if ads.GetTransportApiVersion() == corev3.ApiVersion_V2 { //nolint:staticcheck
		// Unset (AUTO) means V3, as in Envoy since V2 was removed.
		errs = append(errs, config.At("dynamic_resources.ads_config.transport_api_version", errors.New("V2 was removed from the xDS API: use V3")))
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
	if len(errs) == 0 {
		errs = append(errs, config.At("dynamic_resources", supportedDynamic.Check(dr)))
	}
	return config.Join(errs)
}

// start opens the ADS stream: CDS first; LDS once the clusters are warm.
func (d *dynamic) start() {
	d.client.Start()
	d.listeners.WatchStaticRoutes()
	if !d.cds {
		d.finishCDS()
		return
	}
	d.client.Watch(xds.ClusterType, true, nil)
	if d.cdsTimeout > 0 {
		time.AfterFunc(d.cdsTimeout, d.clusters.InitTimeout)
	}
}

// finishCDS asks for listeners, once: the first clusters are warm, or
// their initial fetch timed out.
func (d *dynamic) finishCDS() {
	if !d.lds {
		d.initDone()
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ldsAsked || d.stopped {
		return
	}
	d.ldsAsked = true
	d.client.Watch(xds.ListenerType, true, nil)
	if d.ldsTimeout > 0 {
		time.AfterFunc(d.ldsTimeout, d.listeners.InitTimeout)
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
	d.client.Stop()
}

// Apply implements xds.Handler: the managers apply what they can; each
// refusal is NACKed by name.
func (d *dynamic) Apply(url string, set map[string]*xds.Resource) error {
	d.mu.Lock()
	stopped := d.stopped
	d.mu.Unlock()
	if stopped {
		return errors.New("shutting down")
	}
	var refused map[string]error
	switch url {
	case xds.ClusterType:
		refused = d.clusters.ApplyCDS(set)
	case xds.EndpointType:
		refused = d.clusters.ApplyEDS(set)
	case xds.ListenerType:
		refused = d.listeners.ApplyLDS(set)
	case xds.RouteType:
		refused = d.listeners.ApplyRDS(set)
	case xds.SecretType:
		refused = d.secrets.Apply(set)
	default:
		return fmt.Errorf("unsupported type %s", url)
	}
	return d.record(url, set, refused)
}

// record keeps each refusal for the config dump (error_state shows the
// last update's) and joins them into the NACK.
func (d *dynamic) record(url string, set map[string]*xds.Resource, refused map[string]error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := map[string]*adminv3.UpdateFailureState{}
	d.failed[url] = m
	var errs []error
	for _, name := range sortedKeys(refused) {
		r, err := set[name], refused[name]
		m[name] = &adminv3.UpdateFailureState{FailedConfiguration: r.Any, LastUpdateAttempt: timestamppb.Now(),
			Details: err.Error(), VersionInfo: r.Version}
		errs = append(errs, &xds.ResourceError{Name: name, Err: err})
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
