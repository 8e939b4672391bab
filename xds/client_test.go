package xds

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// handlerFunc adapts a function to Handler.
type handlerFunc func(string, map[string]*Resource) error

func (f handlerFunc) Apply(url string, set map[string]*Resource) error { return f(url, set) }

type fakeServer struct {
	cache cache.SnapshotCache
	addr  string
	mu    sync.Mutex
	reqs  []*discoverygrpc.DiscoveryRequest
	dreqs []*discoverygrpc.DeltaDiscoveryRequest
}

func startServer(t *testing.T) *fakeServer {
	return startServerWith(t, cache.NewSnapshotCache(false, cache.IDHash{}, nil))
}

// startServerWith serves c (go-control-plane's ADS server) on a fresh port.
func startServerWith(t *testing.T, c cache.SnapshotCache) *fakeServer {
	fs := &fakeServer{cache: c}
	cb := xdsserver.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoverygrpc.DiscoveryRequest) error {
			fs.mu.Lock()
			fs.reqs = append(fs.reqs, r)
			fs.mu.Unlock()
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoverygrpc.DeltaDiscoveryRequest) error {
			fs.mu.Lock()
			fs.dreqs = append(fs.dreqs, r)
			fs.mu.Unlock()
			return nil
		},
	}
	fs.addr = serveADS(t, xdsserver.NewServer(context.Background(), fs.cache, cb))
	return fs
}

// serveADS serves an ADS implementation on a fresh loopback port until
// the test ends, and returns the address.
func serveADS(t *testing.T, ads discoverygrpc.AggregatedDiscoveryServiceServer) string {
	t.Helper()
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, ads)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func (fs *fakeServer) set(t *testing.T, v string, res ...types.Resource) {
	snap, err := cache.NewSnapshot(v, map[resource.Type][]types.Resource{resource.RouteType: res})
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.cache.SetSnapshot(context.Background(), "n", snap); err != nil {
		t.Fatal(err)
	}
}

func newClient(t *testing.T, fs *fakeServer, delta bool, h Handler) *Client {
	c, err := New(Options{Node: &corev3.Node{Id: "n"}, Delta: delta, Handler: h, Stats: stats.NewStore().Root(),
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", fs.addr)
		}})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNoEmptyFirstRequest: a named type with no names yet sends nothing
// (an empty first request would ask for every resource).
func TestNoEmptyFirstRequest(t *testing.T) {
	for _, delta := range []bool{false, true} {
		fs := startServer(t)
		fs.set(t, "1", &routev3.RouteConfiguration{Name: "r1"}, &routev3.RouteConfiguration{Name: "r2"})
		var got atomic.Value
		c := newClient(t, fs, delta, handlerFunc(func(_ string, set map[string]*Resource) error {
			got.Store(len(set))
			return nil
		}))
		c.Watch(RouteType, false, nil)
		time.Sleep(200 * time.Millisecond)
		fs.mu.Lock()
		n := len(fs.reqs) + len(fs.dreqs)
		fs.mu.Unlock()
		if n != 0 {
			t.Fatalf("delta=%v: %d requests for a type with no names", delta, n)
		}
		c.Watch(RouteType, false, []string{"r1"})
		eventually(t, "r1", func() bool { v, _ := got.Load().(int); return v == 1 })
	}
}

// TestRepeatedNACKBacksOff: a server that resends a version we refuse
// (go-control-plane does, at once, in state of the world) gets NACKs at
// a falling rate, and an acceptable version is ACKed without a stale
// error_detail.
func TestRepeatedNACKBacksOff(t *testing.T) {
	fs := startServer(t)
	fs.set(t, "bad", &routev3.RouteConfiguration{Name: "r1"})
	var accept atomic.Bool
	c := newClient(t, fs, false, handlerFunc(func(_ string, set map[string]*Resource) error {
		if !accept.Load() {
			return errors.New("refused")
		}
		return nil
	}))
	c.Watch(RouteType, false, []string{"r1"})
	time.Sleep(time.Second)
	fs.mu.Lock()
	nacks := 0
	for _, r := range fs.reqs {
		if r.GetErrorDetail() != nil {
			nacks++
		}
	}
	fs.mu.Unlock()
	if nacks < 2 || nacks > 6 {
		t.Fatalf("%d NACKs in a second, want a few (100 ms doubling)", nacks)
	}
	accept.Store(true)
	fs.set(t, "good", &routev3.RouteConfiguration{Name: "r1", ValidateClusters: nil})
	eventually(t, "the ACK of good", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		for _, r := range fs.reqs {
			if r.GetVersionInfo() == "good" {
				if r.GetErrorDetail() != nil {
					t.Fatalf("the ACK of good carries error_detail %q", r.GetErrorDetail().GetMessage())
				}
				return true
			}
		}
		return false
	})
}

func TestBackoffBounds(t *testing.T) {
	for attempt := range 30 {
		d := backoff(500*time.Millisecond, 30*time.Second, attempt)
		want := min(500*time.Millisecond<<min(attempt, 20), 30*time.Second)
		if d < want/2 || d > want {
			t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, want/2, want)
		}
	}
}

// rawADS is a hand-written ADS server that sends fixed responses, for
// what a snapshot cache cannot send (duplicates, heartbeats).
type rawADS struct {
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer
	responses []*discoverygrpc.DiscoveryResponse
	reqs      chan *discoverygrpc.DiscoveryRequest
}

func (r *rawADS) StreamAggregatedResources(st grpc.BidiStreamingServer[discoverygrpc.DiscoveryRequest, discoverygrpc.DiscoveryResponse]) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	for _, resp := range r.responses {
		if err := st.Send(resp); err != nil {
			return err
		}
		req, err := st.Recv()
		if err != nil {
			return err
		}
		r.reqs <- req
	}
	<-st.Context().Done()
	return nil
}

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDuplicateNamesAndHeartbeats: a response naming a resource twice is
// NACKed and nothing is applied; a TTL heartbeat (a Resource wrapper
// without a body) is ACKed and keeps the resource as it is, applying
// nothing.
func TestDuplicateNamesAndHeartbeats(t *testing.T) {
	r1 := anyOf(t, &routev3.RouteConfiguration{Name: "r1"})
	hb := anyOf(t, &discoverygrpc.Resource{Name: "r1", Ttl: durationpb.New(time.Minute)})
	srv := &rawADS{reqs: make(chan *discoverygrpc.DiscoveryRequest, 4), responses: []*discoverygrpc.DiscoveryResponse{
		{VersionInfo: "1", TypeUrl: RouteType, Nonce: "a", Resources: []*anypb.Any{r1, r1}},
		{VersionInfo: "2", TypeUrl: RouteType, Nonce: "b", Resources: []*anypb.Any{r1}},
		{VersionInfo: "3", TypeUrl: RouteType, Nonce: "c", Resources: []*anypb.Any{hb}},
	}}
	addr := serveADS(t, srv)
	var applied []int
	var mu sync.Mutex
	c := newClient(t, &fakeServer{addr: addr}, false, handlerFunc(func(_ string, set map[string]*Resource) error {
		mu.Lock()
		applied = append(applied, len(set))
		mu.Unlock()
		return nil
	}))
	c.Watch(RouteType, false, []string{"r1"})
	next := func() *discoverygrpc.DiscoveryRequest {
		select {
		case r := <-srv.reqs:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no request")
			return nil
		}
	}
	if r := next(); r.GetErrorDetail() == nil || !strings.Contains(r.GetErrorDetail().GetMessage(), `duplicate resource name "r1"`) {
		t.Fatalf("duplicates: %v", r)
	}
	if r := next(); r.GetErrorDetail() != nil || r.GetVersionInfo() != "2" {
		t.Fatalf("good version: %v", r)
	}
	if r := next(); r.GetErrorDetail() != nil || r.GetVersionInfo() != "3" {
		t.Fatalf("heartbeat: %v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != 1 || applied[0] != 1 {
		t.Fatalf("applied sets %v, want [1] (nothing for the duplicates nor for the heartbeat)", applied)
	}
	if got := c.Known(RouteType)["r1"]; got == nil || got.Message == nil {
		t.Fatal("the heartbeat lost r1")
	}
}

// recorder is a Handler that keeps the last set applied per call.
type recorder struct {
	mu   sync.Mutex
	sets []map[string]*Resource
}

func (r *recorder) Apply(_ string, set map[string]*Resource) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, set)
	return nil
}

func (r *recorder) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sets)
}

// TestTTLExpirySotW drives the client with go-control-plane's
// heartbeating snapshot cache: a route with a 1 s TTL stays while
// heartbeats (every 100 ms) renew it, without being applied again; once
// they stop, it expires and the handler gets the set without it.
func TestTTLExpirySotW(t *testing.T) {
	ctx, stopBeats := context.WithCancel(context.Background())
	defer stopBeats()
	fs := startServerWith(t, cache.NewSnapshotCacheWithHeartbeating(ctx, false, cache.IDHash{}, nil, 100*time.Millisecond))
	ttl := time.Second
	snap, err := cache.NewSnapshotWithTTLs("1", map[resource.Type][]types.ResourceWithTTL{
		resource.RouteType: {{Resource: &routev3.RouteConfiguration{Name: "r1"}, TTL: &ttl}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.cache.SetSnapshot(context.Background(), "n", snap); err != nil {
		t.Fatal(err)
	}
	h := &recorder{}
	c := newClient(t, fs, false, h)
	c.Watch(RouteType, false, []string{"r1"})
	eventually(t, "r1 applied", func() bool { return c.Known(RouteType)["r1"] != nil })
	if got := c.Known(RouteType)["r1"].TTL; got != ttl {
		t.Fatalf("TTL %v, want %v", got, ttl)
	}
	time.Sleep(2 * ttl) // heartbeats renew it
	if c.Known(RouteType)["r1"] == nil {
		t.Fatal("r1 expired although heartbeats came")
	}
	if n := h.calls(); n != 1 {
		t.Fatalf("%d applies, want 1: heartbeats apply nothing", n)
	}
	stopBeats()
	start := time.Now()
	eventually(t, "r1 expired", func() bool { return c.Known(RouteType)["r1"] == nil })
	if d := time.Since(start); d > 2*ttl {
		t.Fatalf("expired %v after the last heartbeat, want about %v", d, ttl)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if last := h.sets[len(h.sets)-1]; len(h.sets) != 2 || len(last) != 0 {
		t.Fatalf("applied %d sets, the last %v; want a second, empty one", len(h.sets), last)
	}
}

// rawDelta is a hand-written delta ADS server playing a script.
type rawDelta struct {
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer
	script func(send func(*discoverygrpc.DeltaDiscoveryResponse))
}

func (r *rawDelta) DeltaAggregatedResources(st grpc.BidiStreamingServer[discoverygrpc.DeltaDiscoveryRequest, discoverygrpc.DeltaDiscoveryResponse]) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	go func() { // ACKs
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	r.script(func(resp *discoverygrpc.DeltaDiscoveryResponse) { st.Send(resp) })
	<-st.Context().Done()
	return nil
}

// TestTTLExpiryDelta: in delta, a resource's ttl is renewed by a
// heartbeat (the name and a ttl without a body), taken away by an update
// without one, and otherwise expires.
func TestTTLExpiryDelta(t *testing.T) {
	r1 := anyOf(t, &routev3.RouteConfiguration{Name: "r1"})
	r2 := anyOf(t, &routev3.RouteConfiguration{Name: "r2"})
	ttl := durationpb.New(2 * time.Second)
	srv := &rawDelta{script: func(send func(*discoverygrpc.DeltaDiscoveryResponse)) {
		send(&discoverygrpc.DeltaDiscoveryResponse{TypeUrl: RouteType, Nonce: "a", Resources: []*discoverygrpc.Resource{
			{Name: "r1", Version: "1", Resource: r1, Ttl: ttl},
			{Name: "r2", Version: "1", Resource: r2, Ttl: ttl},
		}})
		time.Sleep(time.Second)
		// r1: a heartbeat (renewed to 3 s); r2: an update without a TTL.
		send(&discoverygrpc.DeltaDiscoveryResponse{TypeUrl: RouteType, Nonce: "b", Resources: []*discoverygrpc.Resource{
			{Name: "r1", Version: "1", Ttl: ttl},
		}})
		send(&discoverygrpc.DeltaDiscoveryResponse{TypeUrl: RouteType, Nonce: "c", Resources: []*discoverygrpc.Resource{
			{Name: "r2", Version: "2", Resource: r2},
		}})
	}}
	addr := serveADS(t, srv)
	h := &recorder{}
	c := newClient(t, &fakeServer{addr: addr}, true, h)
	c.Watch(RouteType, false, []string{"r1", "r2"})
	eventually(t, "r1 and r2", func() bool { return len(c.Known(RouteType)) == 2 })
	start := time.Now()
	time.Sleep(2400 * time.Millisecond) // past the first TTL: the heartbeat kept r1
	if len(c.Known(RouteType)) != 2 {
		t.Fatalf("known %v after 2.4 s, want r1 (renewed) and r2 (no TTL now)", c.Known(RouteType))
	}
	eventually(t, "r1 expired", func() bool { return c.Known(RouteType)["r1"] == nil })
	if d := time.Since(start); d < 2400*time.Millisecond {
		t.Fatalf("r1 expired %v after it came, before its renewed TTL", d)
	}
	time.Sleep(time.Second)
	if c.Known(RouteType)["r2"] == nil {
		t.Fatal("r2 expired although its update took its TTL away")
	}
}

// TestPartialRejection: a handler that refuses one resource of a response
// keeps the others: the client holds the accepted ones, the refused one at
// its previous version (or not at all when it is new), and NACKs with the
// refusal's reason and, in state of the world, the previous version_info.
func TestPartialRejection(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			fs := startServer(t)
			fs.set(t, "1", &routev3.RouteConfiguration{Name: "r1"}, &routev3.RouteConfiguration{Name: "r2"})
			bad := func(rc *routev3.RouteConfiguration) bool { return len(rc.GetVirtualHosts()) > 0 }
			c := newClient(t, fs, delta, handlerFunc(func(_ string, set map[string]*Resource) error {
				var errs []error
				for n, r := range set {
					if bad(r.Message.(*routev3.RouteConfiguration)) {
						errs = append(errs, &ResourceError{Name: n, Err: errors.New("route " + n + " is bad")})
					}
				}
				return errors.Join(errs...)
			}))
			c.Watch(RouteType, false, []string{"r1", "r2", "r3"})
			eventually(t, "version 1", func() bool { return len(c.Known(RouteType)) == 2 })
			// r2 turns bad, r1 changes, r3 is new and bad.
			vh := []*routev3.VirtualHost{{Name: "x", Domains: []string{"*"}}}
			fs.set(t, "2", &routev3.RouteConfiguration{Name: "r1", ValidateClusters: nil, RequestHeadersToRemove: []string{"x"}},
				&routev3.RouteConfiguration{Name: "r2", VirtualHosts: vh}, &routev3.RouteConfiguration{Name: "r3", VirtualHosts: vh})
			eventually(t, "r1 updated", func() bool {
				r := c.Known(RouteType)["r1"]
				return r != nil && len(r.Message.(*routev3.RouteConfiguration).GetRequestHeadersToRemove()) == 1
			})
			known := c.Known(RouteType)
			if r2 := known["r2"]; r2 == nil || bad(r2.Message.(*routev3.RouteConfiguration)) {
				t.Fatalf("r2 should stay at its previous version, got %v", r2)
			}
			if known["r3"] != nil {
				t.Fatal("the refused new r3 is held")
			}
			eventually(t, "a NACK naming r2 and r3", func() bool {
				fs.mu.Lock()
				defer fs.mu.Unlock()
				var msg, version string
				for _, r := range fs.reqs {
					msg, version = r.GetErrorDetail().GetMessage(), r.GetVersionInfo()
				}
				for _, r := range fs.dreqs {
					msg = r.GetErrorDetail().GetMessage()
				}
				return strings.Contains(msg, "route r2 is bad") && strings.Contains(msg, "route r3 is bad") && (delta || version == "1")
			})
			if v := c.Version(RouteType); !delta && v != "1" {
				t.Fatalf("version %q after a partial NACK, want the previous one", v)
			}
		})
	}
}

// TestNamespacedDelta: VHDS names are namespaces. A subscription to "vr"
// takes "vr/a" (and not "other/b"), and the server's empty answer for a
// host it does not know is kept without a Message, with its aliases, so
// that whoever asked (by that name) learns it was answered.
func TestNamespacedDelta(t *testing.T) {
	vh := func(name string) *anypb.Any {
		return anyOf(t, &routev3.VirtualHost{Name: name, Domains: []string{"x"}})
	}
	srv := &rawDelta{script: func(send func(*discoverygrpc.DeltaDiscoveryResponse)) {
		send(&discoverygrpc.DeltaDiscoveryResponse{TypeUrl: VirtualHostType, Nonce: "a", Resources: []*discoverygrpc.Resource{
			{Name: "vr/a", Version: "1", Resource: vh("vr/a")},
			{Name: "other/b", Version: "1", Resource: vh("other/b")},
			{Name: "vr/missing.example", Aliases: []string{"vr/missing.example"}},
			{Name: "vr/unasked.example", Aliases: []string{"vr/unasked.example"}},
		}})
	}}
	addr := serveADS(t, srv)
	c := newClient(t, &fakeServer{addr: addr}, true, &recorder{})
	c.Watch(VirtualHostType, false, []string{"vr", "vr/missing.example"})
	eventually(t, "the virtual hosts", func() bool { return len(c.Known(VirtualHostType)) == 2 })
	known := c.Known(VirtualHostType)
	if r := known["vr/a"]; r == nil || r.Message == nil {
		t.Fatalf("vr/a: %+v", r)
	}
	if r := known["vr/missing.example"]; r == nil || r.Message != nil || len(r.Aliases) != 1 {
		t.Fatalf("vr/missing.example: %+v, want an answer without a Message", r)
	}
	if known["other/b"] != nil || known["vr/unasked.example"] != nil {
		t.Fatal("other/b or an empty answer nobody asked for taken by a subscription to vr")
	}
}

// TestDeltaSubscriptionsApartFromACKs: in delta, a change of
// subscriptions after a response goes in a request without a nonce, the
// ACK in one of its own: a server that finds the ACK's nonce stale (it
// sent another response meanwhile) drops that request whole, as Istio's
// pilot does, and must not lose the new names with it.
func TestDeltaSubscriptionsApartFromACKs(t *testing.T) {
	fs := startServer(t)
	fs.set(t, "1", &routev3.RouteConfiguration{Name: "r1"}, &routev3.RouteConfiguration{Name: "r2"})
	c := newClient(t, fs, true, &recorder{})
	c.Watch(RouteType, false, []string{"r1"})
	eventually(t, "r1", func() bool { return c.Known(RouteType)["r1"] != nil })
	c.Watch(RouteType, false, []string{"r1", "r2"})
	eventually(t, "r2", func() bool { return c.Known(RouteType)["r2"] != nil })
	// The second ACK follows the response's use: wait for it (under the
	// race detector it can come after r2 is known).
	acks := func() int {
		n := 0
		for _, r := range fs.dreqs {
			if r.GetResponseNonce() != "" {
				n++
			}
		}
		return n
	}
	eventually(t, "the second ACK", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return acks() >= 2
	})
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, r := range fs.dreqs {
		if r.GetResponseNonce() != "" && (len(r.GetResourceNamesSubscribe()) > 0 || len(r.GetResourceNamesUnsubscribe()) > 0) {
			t.Errorf("request %d carries nonce %q and subscription changes %v %v", i, r.GetResponseNonce(),
				r.GetResourceNamesSubscribe(), r.GetResourceNamesUnsubscribe())
		}
	}
	if n := acks(); n < 2 {
		t.Errorf("%d ACKs for the two responses: %v", n, fs.dreqs)
	}
}
