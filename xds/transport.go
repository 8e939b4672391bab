package xds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	runtimeservice "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The transports a Client speaks: one ADS stream for every type, a
// stream of the type's own discovery service (api_config_source GRPC or
// DELTA_GRPC), or REST polling of the type's discovery:<type> path.

type (
	sotwStream  = grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	deltaStream = grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
)

// openSotW opens a state-of-the-world stream: ADS, or the service of
// o.Type.
func (c *Client) openSotW(ctx context.Context) (sotwStream, error) {
	wait := grpc.WaitForReady(true)
	switch c.o.Type {
	case "":
		return discoveryv3.NewAggregatedDiscoveryServiceClient(c.cc).StreamAggregatedResources(ctx, wait)
	case ClusterType:
		return clusterservice.NewClusterDiscoveryServiceClient(c.cc).StreamClusters(ctx, wait)
	case ListenerType:
		return listenerservice.NewListenerDiscoveryServiceClient(c.cc).StreamListeners(ctx, wait)
	case RouteType:
		return routeservice.NewRouteDiscoveryServiceClient(c.cc).StreamRoutes(ctx, wait)
	case EndpointType:
		return endpointservice.NewEndpointDiscoveryServiceClient(c.cc).StreamEndpoints(ctx, wait)
	case SecretType:
		return secretservice.NewSecretDiscoveryServiceClient(c.cc).StreamSecrets(ctx, wait)
	case RuntimeType:
		return runtimeservice.NewRuntimeDiscoveryServiceClient(c.cc).StreamRuntime(ctx, wait)
	case ScopedRouteType:
		return routeservice.NewScopedRoutesDiscoveryServiceClient(c.cc).StreamScopedRoutes(ctx, wait)
	}
	return nil, fmt.Errorf("no discovery service for %s", c.o.Type)
}

// openDelta opens an incremental stream: ADS, or the service of o.Type.
func (c *Client) openDelta(ctx context.Context) (deltaStream, error) {
	wait := grpc.WaitForReady(true)
	switch c.o.Type {
	case "":
		return discoveryv3.NewAggregatedDiscoveryServiceClient(c.cc).DeltaAggregatedResources(ctx, wait)
	case ClusterType:
		return clusterservice.NewClusterDiscoveryServiceClient(c.cc).DeltaClusters(ctx, wait)
	case ListenerType:
		return listenerservice.NewListenerDiscoveryServiceClient(c.cc).DeltaListeners(ctx, wait)
	case RouteType:
		return routeservice.NewRouteDiscoveryServiceClient(c.cc).DeltaRoutes(ctx, wait)
	case EndpointType:
		return endpointservice.NewEndpointDiscoveryServiceClient(c.cc).DeltaEndpoints(ctx, wait)
	case SecretType:
		return secretservice.NewSecretDiscoveryServiceClient(c.cc).DeltaSecrets(ctx, wait)
	case RuntimeType:
		return runtimeservice.NewRuntimeDiscoveryServiceClient(c.cc).DeltaRuntime(ctx, wait)
	case ScopedRouteType:
		return routeservice.NewScopedRoutesDiscoveryServiceClient(c.cc).DeltaScopedRoutes(ctx, wait)
	case VirtualHostType:
		return routeservice.NewVirtualHostDiscoveryServiceClient(c.cc).DeltaVirtualHosts(ctx, wait)
	}
	return nil, fmt.Errorf("no discovery service for %s", c.o.Type)
}

// restPaths are the REST discovery paths, as Envoy polls them.
var restPaths = map[string]string{
	ClusterType: "/v3/discovery:clusters", ListenerType: "/v3/discovery:listeners",
	RouteType: "/v3/discovery:routes", EndpointType: "/v3/discovery:endpoints",
	SecretType: "/v3/discovery:secrets", RuntimeType: "/v3/discovery:runtime",
	ScopedRouteType: "/v3/discovery:scoped-routes",
}

// restSession polls the management server over HTTP/1.1 (api_type REST):
// each poll POSTs the type's current request as JSON (version_info, names,
// error_detail for a refusal) and applies a 200 answer as a state of the
// world response; 304 means nothing changed. Polls come every
// refresh_delay; a changed subscription polls at once.
type restSession struct {
	c    *Client
	http *http.Client
	path string

	mu       sync.Mutex
	req      *discoveryv3.DiscoveryRequest // the latest request built
	urgent   bool                          // its names changed since the last poll
	changed  chan struct{}
	posted   []string // names of the last poll
	answered []string // names of the last poll answered with resources
	polled   bool
}

func newRESTSession(c *Client, ctx context.Context) (*restSession, error) {
	path, ok := restPaths[c.o.Type]
	if !ok {
		return nil, fmt.Errorf("no REST discovery path for %s", c.o.Type)
	}
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return c.o.Dial(ctx) },
		DisableKeepAlives: false, MaxIdleConns: 1,
	}
	go func() { <-ctx.Done(); tr.CloseIdleConnections() }()
	return &restSession{c: c, path: path, changed: make(chan struct{}, 1),
		http: &http.Client{Transport: tr, Timeout: c.o.RESTTimeout}}, nil
}

func (s *restSession) send(ts *typeState) error {
	req := s.c.sotwRequest(ts)
	s.c.mu.Unlock()
	s.mu.Lock()
	s.req = req
	if !s.polled || !equalNames(req.GetResourceNames(), s.posted) {
		s.urgent = true
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

func equalNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// recv waits for the next poll (refresh_delay after the last, or at once
// for a changed subscription), polls and applies the answer.
func (s *restSession) recv() error {
	timer := time.NewTimer(s.c.o.RefreshDelay)
	defer timer.Stop()
	for {
		s.mu.Lock()
		req, urgent := s.req, s.urgent
		s.mu.Unlock()
		if req != nil && (urgent || !s.polled) {
			break
		}
		select {
		case <-s.c.ctx.Done():
			return s.c.ctx.Err()
		case <-s.changed:
			continue
		case <-timer.C:
		}
		if req != nil {
			break
		}
		timer.Reset(s.c.o.RefreshDelay)
	}
	return s.poll()
}

func (s *restSession) poll() error {
	s.mu.Lock()
	req := s.req
	s.urgent, s.polled, s.posted = false, true, req.GetResourceNames()
	if !equalNames(req.GetResourceNames(), s.answered) && req.GetVersionInfo() != "" {
		// A server answers "not modified" to a poll whose version it
		// has (go-control-plane's REST gateway does, whatever the
		// names): names it never answered need a poll without one.
		req = proto.Clone(req).(*discoveryv3.DiscoveryRequest)
		req.VersionInfo = ""
	}
	s.mu.Unlock()
	body, err := protojson.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.c.ctx, s.c.o.RESTTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://xds"+s.path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("content-type", "application/json")
	resp, err := s.http.Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusNotModified:
		s.c.connected.Set(1)
		return nil
	case http.StatusOK:
	default:
		return fmt.Errorf("REST discovery %s: %s: %s", s.path, resp.Status, bytes.TrimSpace(b))
	}
	var dr discoveryv3.DiscoveryResponse
	if err := protojson.Unmarshal(b, &dr); err != nil {
		return fmt.Errorf("REST discovery %s: %w", s.path, err)
	}
	if dr.GetTypeUrl() == "" {
		dr.TypeUrl = s.c.o.Type
	}
	if dr.GetTypeUrl() != s.c.o.Type {
		return errors.New("REST discovery: a response of another type")
	}
	s.mu.Lock()
	s.answered = req.GetResourceNames()
	s.mu.Unlock()
	s.c.applySotW(&dr)
	return nil
}
