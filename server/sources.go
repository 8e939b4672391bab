package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/xds"
)

// sources are the xDS clients of one configuration: the ADS client that
// every `ads: {}` config source shares, and one client per
// api_config_source and type (that type's own gRPC stream, or REST
// polling), made when a source is first used. A type may come from
// several sources (EDS from ADS for some clusters and from an EDS stream
// for others): each client's accepted set is merged with the others of
// its type before the type's manager applies it, so that the manager
// always sees the complete set.
type sources struct {
	d   *dynamic
	ads *xds.Client // nil without ads_config

	mu      sync.Mutex
	clients map[string]*xds.Client // by type and config.SourceKey
	started bool
	stopped bool

	// applyMu makes the merged applies one at a time across clients.
	applyMu sync.Mutex
	// sets are, per type, what each client holds (applyMu).
	sets map[string]map[*xds.Client]map[string]*xds.Resource
}

// handler is one client's xds.Handler.
type handler struct {
	s *sources
	c *xds.Client
}

func (h *handler) Apply(url string, set map[string]*xds.Resource) error {
	return h.s.apply(h.c, url, set)
}

// newClient makes a client for src serving url ("" url: the ADS client).
func (s *sources) newClient(src *corev3.ApiConfigSource, url string) (*xds.Client, error) {
	srv := s.d.s
	name := sourceCluster(src)
	alpn := []string{"h2"}
	if src.GetApiType() == corev3.ApiConfigSource_REST {
		alpn = []string{"http/1.1"}
	}
	h := &handler{s: s}
	o := xds.Options{
		Node:               srv.node(),
		NodeOnEveryRequest: !src.GetSetNodeOnFirstMessageOnly(),
		Delta:              src.GetApiType() == corev3.ApiConfigSource_DELTA_GRPC,
		Type:               url,
		REST:               src.GetApiType() == corev3.ApiConfigSource_REST,
		RefreshDelay:       src.GetRefreshDelay().AsDuration(),
		RESTTimeout:        src.GetRequestTimeout().AsDuration(),
		Dial:               func(ctx context.Context) (net.Conn, error) { return srv.dialStatic(ctx, name, alpn) },
		Handler:            h,
		Log:                srv.log,
		Stats:              srv.store.Root(),
	}
	c, err := xds.New(o)
	if err != nil {
		return nil, err
	}
	h.c = c
	return c, nil
}

// sourceCluster is the static cluster an api_config_source talks to.
func sourceCluster(src *corev3.ApiConfigSource) string {
	if src.GetApiType() == corev3.ApiConfigSource_REST {
		return src.GetClusterNames()[0]
	}
	return src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
}

// client returns the client that serves url from cs, making (and, once
// started, starting) it on first use. It may be called under a
// manager's lock.
func (s *sources) client(cs *corev3.ConfigSource, url string) *xds.Client {
	if cs == nil || cs.GetAds() != nil {
		return s.ads
	}
	key := url + "|" + config.SourceKey(cs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.clients[key]; c != nil {
		return c
	}
	if s.stopped {
		return nil
	}
	c, err := s.newClient(cs.GetApiConfigSource(), url)
	if err != nil {
		s.d.s.log.Error("xDS config source unusable", "type", url, "err", err)
		return nil
	}
	s.clients[key] = c
	if s.started {
		c.Start()
	}
	return c
}

// watch sets the names wanted of url from cs.
func (s *sources) watch(cs *corev3.ConfigSource, url string, wildcard bool, names []string) {
	if c := s.client(cs, url); c != nil {
		c.Watch(url, wildcard, names)
	}
}

func (s *sources) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = true
	if s.ads != nil {
		s.ads.Start()
	}
	for _, c := range s.clients {
		c.Start()
	}
}

func (s *sources) stop() {
	s.mu.Lock()
	s.stopped = true
	all := make([]*xds.Client, 0, len(s.clients)+1)
	if s.ads != nil {
		all = append(all, s.ads)
	}
	for _, c := range s.clients {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.Stop()
	}
}

// apply merges what client c would now hold of url with what the other
// clients of url hold, has the manager apply the whole, and returns the
// refusals among c's resources.
func (s *sources) apply(c *xds.Client, url string, set map[string]*xds.Resource) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.sets[url] == nil {
		s.sets[url] = map[*xds.Client]map[string]*xds.Resource{}
	}
	prev := s.sets[url][c]
	merged := map[string]*xds.Resource{}
	for other, os := range s.sets[url] {
		if other != c {
			for n, r := range os {
				// What another client holds counts while its names
				// still take it (a source a manager left keeps nothing).
				if other.Holds(url, r) {
					merged[n] = r
				}
			}
		}
	}
	for n, r := range set {
		merged[n] = r
	}
	refused, err := s.d.applyType(url, merged)
	if err != nil {
		return err
	}
	mine := map[string]error{}
	kept := make(map[string]*xds.Resource, len(set))
	for n, r := range set {
		kept[n] = r
		if e := refused[n]; e != nil {
			mine[n] = e
			if old := prev[n]; old != nil {
				kept[n] = old
			} else {
				delete(kept, n)
			}
		}
	}
	s.sets[url][c] = kept
	return s.d.record(url, set, mine)
}

// checkSource refuses a config source Strait cannot subscribe to: `ads`
// needs ads_config; an api_config_source must be GRPC or DELTA_GRPC to
// one envoy_grpc static cluster, or REST to one static cluster, with no
// field Strait does not implement.
func checkSource(b *bootstrapv3.Bootstrap, cs *corev3.ConfigSource) error {
	if cs == nil {
		return errors.New("required")
	}
	if err := supportedSource.Check(cs); err != nil {
		return err
	}
	switch {
	case cs.GetAds() != nil:
		if b.GetDynamicResources().GetAdsConfig() == nil {
			return errors.New("ads: {} needs dynamic_resources.ads_config")
		}
		return nil
	case cs.GetApiConfigSource() != nil:
		return config.At("api_config_source", checkAPISource(b, cs.GetApiConfigSource()))
	}
	return errors.New("give ads: {} or an api_config_source")
}

// checkDeltaSource checks a config source that only delta xDS serves
// (VHDS): DELTA_GRPC, or ads: {} with a DELTA_GRPC ads_config.
func checkDeltaSource(b *bootstrapv3.Bootstrap, cs *corev3.ConfigSource) error {
	if err := checkSource(b, cs); err != nil {
		return err
	}
	if cs.GetAds() != nil {
		if b.GetDynamicResources().GetAdsConfig().GetApiType() != corev3.ApiConfigSource_DELTA_GRPC {
			return errors.New("VHDS is delta xDS only: ads: {} needs an ads_config with api_type DELTA_GRPC")
		}
		return nil
	}
	if cs.GetApiConfigSource().GetApiType() != corev3.ApiConfigSource_DELTA_GRPC {
		return config.At("api_config_source.api_type", errors.New("VHDS is delta xDS only: use DELTA_GRPC"))
	}
	return nil
}

// checkAPISource checks an api_config_source (ads_config's too).
func checkAPISource(b *bootstrapv3.Bootstrap, src *corev3.ApiConfigSource) error {
	var errs []error
	static := func(path, name string) {
		for _, c := range b.GetStaticResources().GetClusters() {
			if c.GetName() == name {
				return
			}
		}
		errs = append(errs, config.At(path, fmt.Errorf("%q is not a static cluster", name)))
	}
	switch src.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_DELTA_GRPC:
		if len(src.GetGrpcServices()) != 1 || src.GetGrpcServices()[0].GetEnvoyGrpc() == nil {
			errs = append(errs, config.At("grpc_services", errors.New("exactly one envoy_grpc service is required")))
		} else {
			static("grpc_services[0].envoy_grpc.cluster_name", src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName())
		}
		if len(src.GetClusterNames()) > 0 {
			errs = append(errs, config.At("cluster_names", errors.New("only for api_type REST")))
		}
	case corev3.ApiConfigSource_REST:
		if len(src.GetClusterNames()) != 1 {
			errs = append(errs, config.At("cluster_names", errors.New("exactly one cluster is required")))
		} else {
			static("cluster_names[0]", src.GetClusterNames()[0])
		}
		if len(src.GetGrpcServices()) > 0 {
			errs = append(errs, config.At("grpc_services", errors.New("not for api_type REST")))
		}
	default:
		errs = append(errs, config.At("api_type", fmt.Errorf("%s is not supported (supported: GRPC, DELTA_GRPC, REST)", src.GetApiType())))
	}
	if src.GetTransportApiVersion() == corev3.ApiVersion_V2 { //nolint:staticcheck
		// Unset (AUTO) means V3, as in Envoy since V2 was removed.
		errs = append(errs, config.At("transport_api_version", errors.New("V2 was removed from the xDS API: use V3")))
	}
	return config.Join(errs)
}
