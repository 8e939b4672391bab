// Command xds is a small example control plane for Strait. It serves ADS
// (state of the world and delta) with go-control-plane's snapshot cache and
// publishes one listener, one route, one EDS cluster and its endpoints.
//
// The endpoints come from -upstream, or from -endpoints-file when given:
// that file is checked every second, and a change publishes a new snapshot
// version. See README.md in this directory for a walkthrough.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	cplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Names shared by the resources; the snapshot is consistent only if every
// name a listener or cluster refers to is also in it.
const (
	listenerName = "ingress"
	routeName    = "local_route"
	clusterName  = "backend"
)

// listFlag is a flag that may be repeated and may hold a comma list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18000", "address the ADS gRPC server listens on")
	node := flag.String("node", "strait-example", "node id to serve (the bootstrap's node.id)")
	listen := flag.String("listen", "127.0.0.1:10000", "address of the listener pushed to Strait")
	file := flag.String("endpoints-file", "", "optional file of upstreams, one host:port per line, checked every second")
	var upstreams listFlag
	flag.Var(&upstreams, "upstream", "upstream host:port; repeat or separate with commas (default 127.0.0.1:8080)")
	flag.Parse()
	if len(upstreams) == 0 {
		upstreams = listFlag{"127.0.0.1:8080"}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// ADS mode: the cache answers a request only once it holds every
	// resource that was asked for, so the proxy never sees a half config.
	logger := cplog.LoggerFuncs{
		WarnFunc:  func(f string, a ...any) { log.Printf("cache warning: "+f, a...) },
		ErrorFunc: func(f string, a ...any) { log.Printf("cache error: "+f, a...) },
	}
	snapshots := cache.NewSnapshotCache(true, cache.IDHash{}, logger)

	// Push the first snapshot before serving, so the proxy gets a full
	// config on its first request.
	version := 0
	current := []string(upstreams)
	if *file != "" {
		// Until the file can be read, -upstream is used; watch logs why.
		if eps, err := readEndpoints(*file); err == nil {
			current = eps
		}
	}
	push := func(eps []string) error {
		v := strconv.Itoa(version + 1)
		if err := setSnapshot(ctx, snapshots, *node, v, *listen, eps); err != nil {
			return fmt.Errorf("snapshot version %s: %w", v, err)
		}
		version++
		log.Printf("snapshot version %s set for node %q: endpoints %v", v, *node, eps)
		return nil
	}
	if err := push(current); err != nil {
		log.Fatal(err)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// Strait pings every 30s on an idle ADS stream; allow it, or gRPC
	// closes the connection with "too_many_pings".
	gs := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: 10 * time.Second, PermitWithoutStream: true,
	}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xdsserver.NewServer(ctx, snapshots, callbacks()))
	go func() {
		<-ctx.Done()
		gs.Stop() // ADS streams never end by themselves, so no graceful stop
	}()
	log.Printf("serving ADS on %s", ln.Addr())

	if *file != "" {
		go watch(ctx, *file, current, push)
	}
	if err := gs.Serve(ln); err != nil {
		log.Fatal(err)
	}
}

// watch re-reads path every second and pushes a new snapshot when the list
// of endpoints in it changes. A file that cannot be read or holds a bad
// address changes nothing; each new error is logged once.
func watch(ctx context.Context, path string, last []string, push func([]string) error) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		eps, err := readEndpoints(path)
		if err == nil && !slices.Equal(eps, last) {
			if err = push(eps); err == nil {
				last = eps
			}
		}
		switch {
		case err == nil:
			lastErr = ""
		case err.Error() != lastErr:
			lastErr = err.Error()
			log.Printf("endpoints file: %v (endpoints unchanged)", err)
		}
	}
}

// readEndpoints reads one host:port per line; blank lines and lines that
// start with # are skipped.
func readEndpoints(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var eps []string
	for line := range bytes.Lines(data) {
		if s := strings.TrimSpace(string(line)); s != "" && !strings.HasPrefix(s, "#") {
			eps = append(eps, s)
		}
	}
	return eps, nil
}

// setSnapshot builds the four resources, checks that they are consistent
// and hands them to the cache, which sends them to every watching stream.
func setSnapshot(ctx context.Context, c cache.SnapshotCache, node, version, listen string, eps []string) error {
	lis, err := makeListener(listen)
	if err != nil {
		return err
	}
	cla, err := makeEndpoints(eps)
	if err != nil {
		return err
	}
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: {lis},
		resource.RouteType:    {makeRoute()},
		resource.ClusterType:  {makeCluster()},
		resource.EndpointType: {cla},
	})
	if err != nil {
		return err
	}
	if err := snap.Consistent(); err != nil {
		return err
	}
	return c.SetSnapshot(ctx, node, snap)
}

// adsSource is a config source that says "ask over the same ADS stream".
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// socketAddress parses host:port into an Envoy address.
func socketAddress(hostport string) (*corev3.Address, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%s: bad port: %w", hostport, err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}, nil
}

// makeListener is an HTTP listener whose routes come from RDS.
func makeListener(listen string) (*listenerv3.Listener, error) {
	addr, err := socketAddress(listen)
	if err != nil {
		return nil, err
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		StatPrefix: listenerName,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: routeName,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    listenerName,
		Address: addr,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}, nil
}

// makeRoute sends every request to the backend cluster.
func makeRoute() *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: routeName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name: "all", Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName},
				}},
			}},
		}},
	}
}

// makeCluster is an EDS cluster whose endpoints come over ADS.
func makeCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 clusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

// makeEndpoints is the backend cluster's load assignment.
func makeEndpoints(eps []string) (*endpointv3.ClusterLoadAssignment, error) {
	var lbs []*endpointv3.LbEndpoint
	for _, ep := range eps {
		addr, err := socketAddress(ep)
		if err != nil {
			return nil, err
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: addr},
		}})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: clusterName,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
	}, nil
}

// callbacks logs streams, ACKs and NACKs. A request that carries a response
// nonce answers an earlier response: with error_detail it is a NACK,
// without it an ACK.
func callbacks() xdsserver.CallbackFuncs {
	short := func(url string) string { return url[strings.LastIndex(url, ".")+1:] }
	return xdsserver.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			log.Printf("stream %d: opened (state of the world)", id)
			return nil
		},
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			log.Printf("stream %d: opened (delta)", id)
			return nil
		},
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			switch {
			case r.GetErrorDetail() != nil:
				log.Printf("stream %d: NACK %s (still on version %q): %s", id, short(r.GetTypeUrl()), r.GetVersionInfo(), r.GetErrorDetail().GetMessage())
			case r.GetResponseNonce() != "":
				log.Printf("stream %d: ACK %s version %q", id, short(r.GetTypeUrl()), r.GetVersionInfo())
			}
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			switch {
			case r.GetErrorDetail() != nil:
				log.Printf("stream %d: NACK %s (nonce %s): %s", id, short(r.GetTypeUrl()), r.GetResponseNonce(), r.GetErrorDetail().GetMessage())
			case r.GetResponseNonce() != "":
				log.Printf("stream %d: ACK %s (nonce %s)", id, short(r.GetTypeUrl()), r.GetResponseNonce())
			}
			return nil
		},
	}
}
