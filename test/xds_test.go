package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	runtimeservice "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// controlPlane is go-control-plane's snapshot cache and ADS server on a
// loopback port, recording what Strait sends.
type controlPlane struct {
	t     *testing.T
	cache cache.SnapshotCache
	addr  string
	grpc  *grpc.Server

	mu    sync.Mutex
	nacks []string            // error_detail messages, in order
	acks  map[string][]string // type URL → version_info (SotW) or nonce (delta) acknowledged
	// firstReqs: each stream's first request per type, with its
	// version_info (SotW) or the count of initial_resource_versions.
	firstReqs []string
	gen       int // counts serve calls: a stopped server's handlers may still run
	// restAddr serves go-control-plane's REST gateway (api_type REST).
	restAddr string
	// source, when set, is the api_config_source that set() puts in the
	// resources' EDS and RDS config sources instead of ads: {}.
	source *corev3.ConfigSource
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t, addr, cache.NewSnapshotCache(false, cache.IDHash{}, nil))
}

// startControlPlaneWith serves c; cache.NewSnapshotCache(true, ...) is
// go-control-plane's ADS mode, which sends a snapshot's responses in
// Envoy's order (CDS, EDS, LDS, RDS).
func startControlPlaneWith(t *testing.T, addr string, c cache.SnapshotCache) *controlPlane {
	t.Helper()
	cp := &controlPlane{t: t, acks: map[string][]string{}, cache: c}
	cp.serve(addr)
	return cp
}

// serve starts the gRPC server on addr ("" for a fresh port).
func (cp *controlPlane) serve(addr string) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a killed server may take a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		cp.t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	cp.mu.Lock()
	cp.gen++
	gen := cp.gen
	cp.mu.Unlock()
	cb := xdsserver.CallbackFuncs{
		StreamRequestFunc: func(id int64, r *discoverygrpc.DiscoveryRequest) error {
			cp.record(gen, id, r.GetTypeUrl(), r.GetErrorDetail().GetMessage(), r.GetResponseNonce(), "v="+r.GetVersionInfo())
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, r *discoverygrpc.DeltaDiscoveryRequest) error {
			first := ""
			if len(r.GetInitialResourceVersions()) > 0 {
				first = fmt.Sprintf("irv=%d", len(r.GetInitialResourceVersions()))
			}
			cp.record(gen, id, r.GetTypeUrl(), r.GetErrorDetail().GetMessage(), r.GetResponseNonce(), first)
			return nil
		},
	}
	cb.FetchRequestFunc = func(_ context.Context, r *discoverygrpc.DiscoveryRequest) error {
		cp.record(gen, -1, r.GetTypeUrl(), r.GetErrorDetail().GetMessage(), r.GetResponseNonce(), "v="+r.GetVersionInfo())
		return nil
	}
	srv := xdsserver.NewServer(context.Background(), cp.cache, cb)
	cp.grpc = grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(cp.grpc, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(cp.grpc, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(cp.grpc, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(cp.grpc, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(cp.grpc, srv)
	routeservice.RegisterScopedRoutesDiscoveryServiceServer(cp.grpc, srv)
	routeservice.RegisterVirtualHostDiscoveryServiceServer(cp.grpc, srv)
	runtimeservice.RegisterRuntimeDiscoveryServiceServer(cp.grpc, srv)
	secretservice.RegisterSecretDiscoveryServiceServer(cp.grpc, srv)
	go cp.grpc.Serve(ln)
	cp.t.Cleanup(cp.grpc.Stop)
	if cp.restAddr == "" {
		rest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, code, err := (&xdsserver.HTTPGateway{Server: srv}).ServeHTTP(r)
			if err != nil {
				http.Error(w, err.Error(), code)
				return
			}
			w.WriteHeader(code)
			w.Write(b)
		}))
		cp.restAddr = rest.Listener.Addr().String()
		cp.t.Cleanup(rest.Close)
	}
}

func (cp *controlPlane) record(gen int, stream int64, url, nack, nonce, first string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	switch {
	case nack != "":
		cp.nacks = append(cp.nacks, nack)
	case nonce != "":
		cp.acks[url] = append(cp.acks[url], nonce)
	default:
		cp.firstReqs = append(cp.firstReqs, fmt.Sprintf("server %d stream %d: %s %s", gen, stream, url, first))
	}
}

func (cp *controlPlane) nackCount() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return len(cp.nacks)
}

// set publishes a snapshot for node "strait-test".
func (cp *controlPlane) set(version string, res map[resource.Type][]types.Resource) {
	cp.t.Helper()
	if cp.source != nil {
		for _, r := range res[resource.ClusterType] {
			if c := r.(*clusterv3.Cluster); c.GetEdsClusterConfig() != nil {
				c.EdsClusterConfig.EdsConfig = cp.source
			}
		}
		for _, r := range res[resource.ListenerType] {
			setRDSSource(cp.t, r.(*listenerv3.Listener), cp.source)
		}
	}
	snap, err := cache.NewSnapshot(version, res)
	if err != nil {
		cp.t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), "strait-test", snap); err != nil {
		cp.t.Fatal(err)
	}
}

func fromJSON[T proto.Message](t testing.TB, m T, js string) T {
	t.Helper()
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	return m
}

// setRDSSource points the connection managers of l at src for RDS.
func setRDSSource(t *testing.T, l *listenerv3.Listener, src *corev3.ConfigSource) {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var hcm hcmv3.HttpConnectionManager
			if f.GetTypedConfig().UnmarshalTo(&hcm) != nil || hcm.GetRds() == nil {
				continue
			}
			hcm.GetRds().ConfigSource = src
			a, err := anypb.New(&hcm)
			if err != nil {
				t.Fatal(err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
}

// xdsMode is how Strait gets its config from the control plane.
type xdsMode struct {
	name string
	ads  bool
	api  string // GRPC, DELTA_GRPC or REST
}

// xdsModes are ADS (state of the world and delta) and separate per-type
// streams (GRPC, DELTA_GRPC).
var xdsModes = []xdsMode{{"ads", true, "GRPC"}, {"ads-delta", true, "DELTA_GRPC"}, {"grpc", false, "GRPC"}, {"delta", false, "DELTA_GRPC"}}

// eachMode runs f over the modes, each with its own control plane
// (resources pointed at the mode's config source), and returns the
// bootstrap that makes Strait use it.
func eachMode(t *testing.T, modes []xdsMode, f func(t *testing.T, cp *controlPlane, boot string)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "")
			if m.ads {
				f(t, cp, xdsBootstrap(cp.addr, m.api == "DELTA_GRPC"))
				return
			}
			f(t, cp, cp.useSources(m.api))
		})
	}
}

// useSources makes the control plane's resources name api_config_source
// (api: GRPC, DELTA_GRPC or REST) and returns the bootstrap that gets
// CDS and LDS from the same kind of source.
func (cp *controlPlane) useSources(api string) string {
	addr, svc, extra := cp.addr, `grpc_services: [ { envoy_grpc: { cluster_name: xds_cluster } } ]`, ""
	if api == "REST" {
		addr, svc, extra = cp.restAddr, `cluster_names: [ xds_cluster ]`, `, refresh_delay: 0.1s`
	}
	src := `{ api_config_source: { api_type: ` + api + `, transport_api_version: V3, ` + svc + extra + ` }, resource_api_version: V3 }`
	cp.source = fromJSON(cp.t, &corev3.ConfigSource{}, mustJSON(cp.t, src))
	boot := testutil.XDSBootstrap("strait-test", addr, "127.0.0.1:0", false)
	i, j := strings.Index(boot, "dynamic_resources:"), strings.Index(boot, "static_resources:")
	boot = boot[:i] + "dynamic_resources:\n  cds_config: " + src + "\n  lds_config: " + src + "\n" + boot[j:]
	if api == "REST" {
		boot = strings.Replace(boot, "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n", "", 1)
	}
	return boot
}

func mustJSON(t *testing.T, y string) string {
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}

// named is an upstream that answers with its name.
func named(t testing.TB, name string) string {
	return serveHTTP(t, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, name) }, false)
}

func xdsBootstrap(cpAddr string, delta bool) string {
	return testutil.XDSBootstrap("strait-test", cpAddr, "127.0.0.1:0", delta)
}

// body fetches url; it returns the status and body, or status 0 when the
// request failed.
func body(c *http.Client, url string) (int, string) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, sb.String()
}

// waitBody polls url until it answers want (status 200), up to d.
func waitBody(t *testing.T, url, want string, d time.Duration) time.Duration {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	start := time.Now()
	var code int
	var got string
	for time.Since(start) < d {
		if code, got = body(c, url); code == 200 && got == want {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: still %d %q after %v, want %q", url, code, got, d, want)
	return 0
}

func TestXDS(t *testing.T) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) { testXDS(t, delta) })
	}
}

func testXDS(t *testing.T, delta bool) {
	cp := startControlPlane(t, "")
	a, b, c := named(t, "a"), named(t, "b"), named(t, "c")
	laddr := "127.0.0.1:" + freePort(t)
	lis := testutil.XDSListener("ingress", laddr, "r1", "")
	snap := func(v string, route *routev3.RouteConfiguration, cls []types.Resource, eps []types.Resource) {
		cp.set(v, map[resource.Type][]types.Resource{
			resource.ListenerType: {lis}, resource.RouteType: {route},
			resource.ClusterType: cls, resource.EndpointType: eps,
		})
	}
	snap("1", testutil.XDSRoute("r1", "c1", ""), []types.Resource{testutil.XDSCluster("c1"), testutil.XDSCluster("c2")},
		[]types.Resource{testutil.XDSEndpoints("c1", a), testutil.XDSEndpoints("c2", b)})
	p := startProxy(t, xdsBootstrap(cp.addr, delta))
	url := "http://" + laddr + "/"

	// Pushed: traffic flows, and the server is ready (its first
	// listener warmed on RDS), long before the 15 s fetch timeouts.
	waitBody(t, url, "a", 10*time.Second)
	testutil.Eventually(t, time.Second, "/ready LIVE", func() bool {
		code, _ := get(t, p.admin()+"/ready")
		return code == 200
	})
	if v := p.stat("control_plane.connected_state"); v != 1 {
		t.Fatalf("connected_state %d", v)
	}
	for _, st := range []string{"cluster_manager.cds.update_success", "listener_manager.lds.update_success", "xds.rds.update_success", "xds.eds.update_success"} {
		// A version serves traffic a moment before its ACK is counted (a
		// race-detector run under epoll saw the RDS count still 0).
		testutil.Eventually(t, 2*time.Second, st, func() bool { return p.stat(st) >= 1 })
	}
	want := []string{
		`"dynamicActiveClusters"`, `"name":"c1"`, `"dynamicListeners"`, `"activeState"`,
		`"dynamicRouteConfigs"`, `"dynamicEndpointConfigs"`, `"lastUpdated"`, `"versionInfo"`,
		`"name":"xds_cluster"`, // static beside dynamic
	}
	if !delta {
		want = append(want, `"versionInfo":"1"`) // delta versions are per resource
	}
	checkDump(t, p, want)

	// Route changed: traffic follows within a second.
	snap("2", testutil.XDSRoute("r1", "c2", ""), []types.Resource{testutil.XDSCluster("c1"), testutil.XDSCluster("c2")},
		[]types.Resource{testutil.XDSEndpoints("c1", a), testutil.XDSEndpoints("c2", b)})
	if d := waitBody(t, url, "b", time.Second); d > time.Second {
		t.Fatalf("route change took %v", d)
	}

	// Endpoints replaced under 200 req/s: no request fails.
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var lastFail atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl := &http.Client{Timeout: 3 * time.Second}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 2000; i++ { // bounded: 10 s at most
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			sent.Add(1)
			if code, got := body(cl, url); code != 200 || (got != "b" && got != "c") {
				failed.Add(1)
				lastFail.Store(fmt.Sprintf("%d %q", code, got))
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	snap("3", testutil.XDSRoute("r1", "c2", ""), []types.Resource{testutil.XDSCluster("c1"), testutil.XDSCluster("c2")},
		[]types.Resource{testutil.XDSEndpoints("c1", a), testutil.XDSEndpoints("c2", c)})
	waitBody(t, url, "c", 2*time.Second)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || sent.Load() < 50 {
		t.Fatalf("endpoint swap: %d of %d requests failed (last: %v)", failed.Load(), sent.Load(), lastFail.Load())
	}

	// Cluster removed while its route still names it: it serves on for
	// the linger bound (the drain time, 2 s here), then the route gets
	// 503 and its stats go (the kept cluster's stay); a new cluster:
	// traffic recovers.
	if _, ok := p.srv.Stats().Lookup("cluster.c2.upstream_rq_total"); !ok {
		t.Fatal("no stats for c2 while it serves")
	}
	removed := time.Now()
	snap("4", testutil.XDSRoute("r1", "c2", ""), []types.Resource{testutil.XDSCluster("c1")},
		[]types.Resource{testutil.XDSEndpoints("c1", a)})
	time.Sleep(500 * time.Millisecond)
	if code, got := body(&http.Client{Timeout: 2 * time.Second}, url); code != 200 || got != "c" {
		t.Fatalf("a removed cluster its route names: %d %q, want it serving on", code, got)
	}
	testutil.Eventually(t, 5*time.Second, "503 for the removed cluster", func() bool {
		code, _ := body(&http.Client{Timeout: 2 * time.Second}, url)
		return code == 503
	})
	if d := time.Since(removed); d < 1500*time.Millisecond {
		t.Fatalf("the removed cluster went after %v, before its linger bound", d)
	}
	if _, ok := p.srv.Stats().Lookup("cluster.c2.upstream_rq_total"); ok {
		t.Fatal("the removed cluster c2 still has stats")
	}
	if _, ok := p.srv.Stats().Lookup("cluster.c1.upstream_rq_total"); !ok {
		t.Fatal("the kept cluster c1 lost its stats")
	}
	snap("5", testutil.XDSRoute("r1", "c3", ""), []types.Resource{testutil.XDSCluster("c1"), testutil.XDSCluster("c3")},
		[]types.Resource{testutil.XDSEndpoints("c1", a), testutil.XDSEndpoints("c3", b)})
	waitBody(t, url, "b", 2*time.Second)
	good5 := func() []types.Resource { return []types.Resource{testutil.XDSCluster("c1"), testutil.XDSCluster("c3")} }
	eps5 := func() []types.Resource {
		return []types.Resource{testutil.XDSEndpoints("c1", a), testutil.XDSEndpoints("c3", b)}
	}

	// A bad route: NACKed with the reason; the old config keeps serving.
	n := cp.nackCount()
	snap("6", testutil.XDSRoute("r1", "c1", `{"match":{"safe_regex":{"regex":"(unclosed"}},"route":{"cluster":"c1"}},`), good5(), eps5())
	testutil.Eventually(t, 2*time.Second, "the bad route's NACK", func() bool { return cp.nackCount() > n })
	cp.mu.Lock()
	reason := cp.nacks[len(cp.nacks)-1]
	cp.mu.Unlock()
	if !strings.Contains(reason, `route configuration "r1"`) || !strings.Contains(reason, "regex") {
		t.Fatalf("NACK reason %q does not name the route and the regex", reason)
	}
	if code, got := body(&http.Client{Timeout: 2 * time.Second}, url); code != 200 || got != "b" {
		t.Fatalf("after the NACK: %d %q, want the old config's b", code, got)
	}
	if p.stat("xds.rds.update_rejected") == 0 {
		t.Fatal("xds.rds.update_rejected not counted")
	}
	checkDump(t, p, []string{`"errorState"`, `missing closing )`})

	// A listener on an address in use: NACKed, and the good listener
	// keeps serving.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	n = cp.nackCount()
	cp.set("7", map[resource.Type][]types.Resource{
		resource.ListenerType: {lis, testutil.XDSListener("busy", busy.Addr().String(), "r1", "")},
		resource.RouteType:    {testutil.XDSRoute("r1", "c3", "")}, resource.ClusterType: good5(), resource.EndpointType: eps5(),
	})
	testutil.Eventually(t, 2*time.Second, "the busy listener's NACK", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		for _, r := range cp.nacks[n:] {
			if strings.Contains(r, `listener "busy"`) && strings.Contains(r, "address already in use") {
				return true
			}
		}
		return false
	})
	// A later good version is ACKed and applied.
	snap("8", testutil.XDSRoute("r1", "c1", ""), good5(), eps5())
	waitBody(t, url, "a", 2*time.Second)
	testutil.Eventually(t, 2*time.Second, "error_state cleared by the good version", func() bool {
		_, dump := get(t, p.admin()+"/config_dump")
		return !strings.Contains(dump, "errorState")
	})

	// Control plane killed: the last config keeps serving; restarted on
	// the same address, Strait reconnects and updates resume.
	cpAddr := cp.addr
	cp.grpc.Stop()
	testutil.Eventually(t, 3*time.Second, "connected_state 0", func() bool { return p.stat("control_plane.connected_state") == 0 })
	waitBody(t, url, "a", time.Second)
	cp.serve(cpAddr)
	// The restarted server gets the next version.
	snap("9", testutil.XDSRoute("r1", "c3", ""), good5(), eps5())
	waitBody(t, url, "b", 10*time.Second)
	resend := " v=8" // SotW resends the accepted version
	if delta {
		resend = " irv=" // delta sends the versions it holds
	}
	// Clusters come first, so that no listener or route names a cluster
	// not yet asked for.
	cp.mu.Lock()
	firsts := cp.firstReqs
	cp.mu.Unlock()
	i := slices.IndexFunc(firsts, func(l string) bool { return strings.HasPrefix(l, "server 2 ") })
	if i < 0 || !strings.Contains(firsts[i], resource.ClusterType+resend) {
		t.Fatalf("first requests per stream:\n%s\nwant the first to the restarted server: CDS with%s", strings.Join(firsts, "\n"), resend)
	}
	if p.stat("control_plane.connected_state") != 1 {
		t.Fatal("not connected after the restart")
	}
}

// checkDump fetches /config_dump and checks that it has each of want.
func checkDump(t *testing.T, p *proxy, want []string) {
	t.Helper()
	code, dump := get(t, p.admin()+"/config_dump")
	if code != 200 {
		t.Fatalf("config_dump: %d", code)
	}
	dump = regexp.MustCompile(`":\s+`).ReplaceAllString(dump, `":`) // protojson varies its spacing
	for _, w := range want {
		if !strings.Contains(dump, w) {
			t.Errorf("config_dump lacks %s", w)
		}
	}
}

// TestXDSListenerWarming: a listener whose routes never arrive does not
// accept connections until initial_fetch_timeout; then it opens and
// answers 404 (no route) until they do.
func TestXDSListenerWarming(t *testing.T) {
	cp := startControlPlane(t, "")
	a := named(t, "a")
	laddr := "127.0.0.1:" + freePort(t)
	cp.set("1", map[resource.Type][]types.Resource{
		resource.ListenerType: {testutil.XDSListener("ingress", laddr, "never", "1s")},
		resource.ClusterType:  {testutil.XDSCluster("c1")}, resource.EndpointType: {testutil.XDSEndpoints("c1", a)},
	})
	p := startProxy(t, xdsBootstrap(cp.addr, false))
	start := time.Now()
	time.Sleep(500 * time.Millisecond)
	if c, err := net.Dial("tcp", laddr); err == nil {
		c.Close()
		t.Fatal("a warming listener accepted a connection")
	}
	checkDump(t, p, []string{`"warmingState"`})
	if code, body := get(t, p.admin()+"/ready"); code != 503 || !strings.Contains(body, "INITIALIZING") {
		t.Fatalf("/ready while the first listener warms: %d %q", code, body)
	}
	url := "http://" + laddr + "/"
	testutil.Eventually(t, 3*time.Second, "the listener to open after the fetch timeout", func() bool {
		code, _ := body(&http.Client{Timeout: 2 * time.Second}, url)
		return code == 404
	})
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("opened after %v, before the 1 s fetch timeout", d)
	}
	if code, body := get(t, p.admin()+"/ready"); code != 200 || !strings.Contains(body, "LIVE") {
		t.Fatalf("/ready after the fetch timeout: %d %q", code, body)
	}
	// The route arrives later and is used.
	cp.set("2", map[resource.Type][]types.Resource{
		resource.ListenerType: {testutil.XDSListener("ingress", laddr, "never", "1s")},
		resource.RouteType:    {testutil.XDSRoute("never", "c1", "")},
		resource.ClusterType:  {testutil.XDSCluster("c1")}, resource.EndpointType: {testutil.XDSEndpoints("c1", a)},
	})
	waitBody(t, url, "a", 2*time.Second)
}

// TestXDSBootstrapErrors: a dynamic_resources Strait cannot serve names
// the field and refuses to start.
func TestXDSBootstrapErrors(t *testing.T) {
	base := xdsBootstrap("127.0.0.1:1", false)
	tests := []struct{ name, from, to, want string }{
		{"rest", "api_type: GRPC", "api_type: REST", "dynamic_resources.ads_config.api_type: REST is not supported"},
		{"not static", "cluster_name: xds_cluster", "cluster_name: nope", `grpc_services[0].envoy_grpc.cluster_name: "nope" is not a static cluster`},
		{"lds not ads", "lds_config: { ads: {}, resource_api_version: V3 }", "lds_config: { path_config_source: { path: /tmp/x } }", "dynamic_resources.lds_config.path_config_source: not supported yet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(base, tc.from, tc.to, 1)
			if y == base {
				t.Fatalf("%q not in the bootstrap", tc.from)
			}
			_, err := buildServer(y)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestXDSListenerUpdate: a changed listener takes over the socket: a
// connection made before the change finishes its request on the old
// version and is closed (HTTP/1.1: Connection: close), new connections
// get the new version, and the port never refuses. An update that leaves
// the listener unchanged does not touch its connections.
func TestXDSListenerUpdate(t *testing.T) {
	cp := startControlPlane(t, "")
	release := make(chan struct{})
	a := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		fmt.Fprint(w, "a")
	}, false)
	b := named(t, "b")
	laddr := "127.0.0.1:" + freePort(t)
	res := func(route string, extraCluster bool) map[resource.Type][]types.Resource {
		cls := []types.Resource{testutil.XDSCluster("c1"), testutil.XDSCluster("c2")}
		if extraCluster {
			cls = append(cls, testutil.XDSCluster("c3"))
		}
		return map[resource.Type][]types.Resource{
			resource.ListenerType: {testutil.XDSListener("ingress", laddr, route, "")},
			resource.RouteType:    {testutil.XDSRoute("r1", "c1", ""), testutil.XDSRoute("r2", "c2", "")},
			resource.ClusterType:  cls,
			resource.EndpointType: {testutil.XDSEndpoints("c1", a), testutil.XDSEndpoints("c2", b), testutil.XDSEndpoints("c3", b)},
		}
	}
	cp.set("1", res("r1", false))
	p := startProxy(t, xdsBootstrap(cp.addr, false))
	url := "http://" + laddr + "/"
	waitBody(t, url, "a", 10*time.Second)

	conn, err := net.Dial("tcp", laddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	send := func(path string) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	read := func() (*http.Response, string) {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	exchange := func() *http.Response {
		t.Helper()
		send("/")
		resp, _ := read()
		return resp
	}
	exchange()
	// An update that does not change the listener (a cluster added).
	cp.set("2", res("r1", true))
	testutil.Eventually(t, 2*time.Second, "the cluster update", func() bool { return p.stat("cluster_manager.cds.update_success") >= 2 })
	if resp := exchange(); resp.Close {
		t.Fatal("an unchanged listener's connection was told to close")
	}
	// An HTTP/2 connection of the old version, too.
	h2 := dialH2(t, laddr)
	h2.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h2.block("/"), EndStream: true, EndHeaders: true})
	if st := h2.response(1); st != "200" {
		t.Fatalf("HTTP/2 before the change: %s", st)
	}
	// The listener changes (other route name) while a request is in
	// flight on the old connection.
	send("/slow")
	time.Sleep(50 * time.Millisecond)
	cp.set("3", res("r2", true))
	waitBody(t, url, "b", 2*time.Second)
	if code, ok := h2.waitGoAway(3 * time.Second); !ok || code != http2.ErrCodeNo {
		t.Fatalf("old HTTP/2 connection after the listener changed: GOAWAY %v (seen %v), want NO_ERROR", code, ok)
	}
	close(release)
	resp, got := read()
	if got != "a" || !resp.Close { // Close: the response said Connection: close
		t.Fatalf("in-flight request across the listener change: body %q Close=%v Connection=%q, want the old route's a and close", got, resp.Close, resp.Header.Get("Connection"))
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("old connection not closed after its last response: %v", err)
	}
	if v := p.stat("listener_manager.lds.update_success"); v < 2 {
		t.Fatalf("lds update_success %d", v)
	}
}

// TestXDSExample runs examples/xds as its README does: the example
// control plane (built from source) drives an in-process Strait started
// from examples/xds/bootstrap.yaml, ports swapped for free ones.
func TestXDSExample(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example")
	}
	bin := filepath.Join(t.TempDir(), "xds-example")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/xds").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	up := named(t, "through the example")
	cpPort, lPort := freePort(t), freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-addr", "127.0.0.1:"+cpPort, "-listen", "127.0.0.1:"+lPort, "-upstream", up)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	b, err := os.ReadFile("../examples/xds/bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.ReplaceAll(string(b), "port_value: 18000", "port_value: "+cpPort)
	y = strings.ReplaceAll(y, "port_value: 9901", "port_value: 0")
	startProxy(t, y)
	waitBody(t, "http://127.0.0.1:"+lPort+"/", "through the example", 15*time.Second)
}

// TestXDSStaticListenerRDSAndDNSCluster: a static listener takes its
// routes from RDS (with CDS and no LDS), and a STRICT_DNS cluster pushed
// by CDS is used only once resolved, so updating it fails no request.
func TestXDSStaticListenerRDSAndDNSCluster(t *testing.T) {
	cp := startControlPlane(t, "")
	a := named(t, "a")
	_, port, _ := net.SplitHostPort(a)
	dnsCluster := func(timeout string) *clusterv3.Cluster {
		return fromJSON(t, &clusterv3.Cluster{}, `{"name":"dns","type":"STRICT_DNS","connect_timeout":"`+timeout+`","dns_lookup_family":"V4_ONLY",
		  "load_assignment":{"cluster_name":"dns","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"localhost","port_value":`+port+`}}}}]}]}}`)
	}
	cp.set("1", map[resource.Type][]types.Resource{
		resource.ClusterType: {dnsCluster("1s")},
		resource.RouteType:   {testutil.XDSRoute("r1", "dns", "")},
	})
	y := xdsBootstrap(cp.addr, false)
	y = strings.Replace(y, "  lds_config: { ads: {}, resource_api_version: V3 }\n", "", 1)
	y += `  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          rds: { route_config_name: r1, config_source: { ads: {}, resource_api_version: V3 } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
`
	p := startProxy(t, y)
	url := p.url("ingress") + "/"
	waitBody(t, url, "a", 10*time.Second)
	// The DNS cluster changes while requests flow: none fails.
	c := &http.Client{Timeout: 2 * time.Second}
	cp.set("2", map[resource.Type][]types.Resource{
		resource.ClusterType: {dnsCluster("2s")},
		resource.RouteType:   {testutil.XDSRoute("r1", "dns", "")},
	})
	deadline := time.Now().Add(time.Second)
	for n := 0; time.Now().Before(deadline) && n < 1000; n++ {
		if code, got := body(c, url); code != 200 || got != "a" {
			t.Fatalf("request %d during the DNS cluster update: %d %q", n, code, got)
		}
	}
	if p.stat("cluster_manager.cds.update_success") < 2 {
		t.Fatal("the cluster update was not applied")
	}
}

// TestXDSClusterRemovedInFlight: a request in flight to a cluster that
// CDS removes finishes; new requests get 503.
func TestXDSClusterRemovedInFlight(t *testing.T) {
	cp := startControlPlane(t, "")
	release := make(chan struct{})
	slow := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		fmt.Fprint(w, "finished")
	}, false)
	laddr := "127.0.0.1:" + freePort(t)
	lis := testutil.XDSListener("ingress", laddr, "r1", "")
	cp.set("1", map[resource.Type][]types.Resource{
		resource.ListenerType: {lis}, resource.RouteType: {testutil.XDSRoute("r1", "c1", "")},
		resource.ClusterType: {testutil.XDSCluster("c1")}, resource.EndpointType: {testutil.XDSEndpoints("c1", slow)},
	})
	p := startProxy(t, xdsBootstrap(cp.addr, true))
	url := "http://" + laddr + "/"
	testutil.Eventually(t, 10*time.Second, "the listener", func() bool { return p.srv.ListenerAddr("ingress") != nil })
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		code, b := body(&http.Client{Timeout: 5 * time.Second}, url)
		done <- result{code, b}
	}()
	testutil.Eventually(t, 2*time.Second, "the request upstream", func() bool { return p.stat("cluster.c1.upstream_rq_active") == 1 })
	cp.set("2", map[resource.Type][]types.Resource{
		resource.ListenerType: {lis}, resource.RouteType: {testutil.XDSRoute("r1", "c1", "")},
	})
	// A probe sent before the removal lands reaches the slow upstream:
	// it gives up quickly and the next one tries.
	probe := &http.Client{Timeout: 300 * time.Millisecond}
	testutil.Eventually(t, 3*time.Second, "503 for new requests", func() bool {
		code, _ := body(probe, url)
		return code == 503
	})
	close(release)
	if r := <-done; r.code != 200 || r.body != "finished" {
		t.Fatalf("the in-flight request: %d %q", r.code, r.body)
	}
}

// TestXDSResourceTTL: a route configuration pushed with a TTL serves
// while go-control-plane's heartbeats renew it; when the control plane
// stops heartbeating (it forgot the resource, or is gone), the route
// expires and the listener answers 404, as Envoy does when a route
// configuration is removed. The listener, cluster and endpoints, pushed
// without a TTL, stay.
func TestXDSResourceTTL(t *testing.T) {
	ctx, stopBeats := context.WithCancel(context.Background())
	defer stopBeats()
	cp := &controlPlane{t: t, acks: map[string][]string{}}
	cp.cache = cache.NewSnapshotCacheWithHeartbeating(ctx, false, cache.IDHash{}, nil, 100*time.Millisecond)
	cp.serve("")
	a := named(t, "a")
	laddr := "127.0.0.1:" + freePort(t)
	ttl := time.Second
	snap, err := cache.NewSnapshotWithTTLs("1", map[resource.Type][]types.ResourceWithTTL{
		resource.ListenerType: {{Resource: testutil.XDSListener("ingress", laddr, "r1", "")}},
		resource.RouteType:    {{Resource: testutil.XDSRoute("r1", "c1", ""), TTL: &ttl}},
		resource.ClusterType:  {{Resource: testutil.XDSCluster("c1")}},
		resource.EndpointType: {{Resource: testutil.XDSEndpoints("c1", a)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), "strait-test", snap); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, xdsBootstrap(cp.addr, false))
	url := "http://" + laddr + "/"
	waitBody(t, url, "a", 10*time.Second)
	// (The counter moves just after the route commits.)
	testutil.Eventually(t, time.Second, "the RDS update counted", func() bool { return p.stat("xds.rds.update_success") >= 1 })
	applied := p.stat("xds.rds.update_success")
	time.Sleep(2 * ttl) // heartbeats keep it, and apply nothing
	waitBody(t, url, "a", time.Second)
	if n := p.stat("xds.rds.update_success"); n != applied {
		t.Fatalf("rds update_success %d after heartbeats, want %d (a heartbeat renews, it does not apply)", n, applied)
	}
	stopBeats()
	c := &http.Client{Timeout: time.Second}
	testutil.Eventually(t, 4*ttl, "the route to expire (404)", func() bool {
		code, _ := body(c, url)
		return code == 404
	})
	_, dump := get(t, p.admin()+"/config_dump")
	if strings.Contains(dump, `"dynamicRouteConfigs"`) || !strings.Contains(dump, `"dynamicActiveClusters"`) {
		t.Fatalf("config_dump after expiry: want no route configuration and the cluster kept:\n%s", dump)
	}
}
