package upstream

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"

	// Clusters resolve their codec when built, as in the binary.
	_ "github.com/straitproxy/strait/protocol/http1"
)

type fixedLB struct{}

func (fixedLB) Pick(hs *HostSet, _ *PickHint) *Host { return hs.Hosts[0] }

func init() {
	config.Register(config.Extension{Kind: config.LoadBalancer, Name: "envoy.load_balancing_policies.round_robin",
		Factory: LBFactory(func() LoadBalancer { return fixedLB{} })})
}

// sink accepts connections and holds them; closeAll closes them.
type sink struct {
	ln    net.Listener
	conns chan net.Conn
}

func newSink(t *testing.T) *sink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, conns: make(chan net.Conn, 64)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	return s
}

func testCluster(t *testing.T, addr string, extra string) *Cluster {
	host, port, _ := net.SplitHostPort(addr)
	js := `{"name":"c","connect_timeout":"1s",` + extra + `"load_assignment":{"cluster_name":"c","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"` + host + `","port_value":` + port + `}}}}]}]}}`
	var cl clusterv3.Cluster
	if err := protojson.Unmarshal([]byte(js), &cl); err != nil {
		t.Fatal(err)
	}
	c, err := BuildCluster(&cl, stats.NewStore().Root(), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func TestPoolReusesAndDetectsDeadConnections(t *testing.T) {
	s := newSink(t)
	c := testCluster(t, s.ln.Addr().String(), "")
	p := c.Hosts().Hosts[0].Pool()
	ctx := context.Background()

	c1, err := p.Acquire(ctx, 0, ReuseAny)
	if err != nil || c1.Reused {
		t.Fatalf("first acquire: %v reused=%v", err, c1 != nil && c1.Reused)
	}
	server1 := <-s.conns
	p.Release(c1, true)
	c2, _ := p.Acquire(ctx, 0, ReuseAny)
	if c2 != c1 || !c2.Reused {
		t.Fatal("idle connection not reused")
	}
	p.Release(c2, true)

	server1.Close() // the upstream closes the idle connection
	// Connections idle for less than peekAfterIdle are reused unchecked
	// (the proxy retries a request that meets one closed under it).
	time.Sleep(peekAfterIdle + 20*time.Millisecond)
	c3, err := p.Acquire(ctx, 0, ReuseAny)
	if err != nil {
		t.Fatal(err)
	}
	if c3 == c1 {
		t.Fatal("handed out a connection the upstream had closed")
	}
	if got := c.Stats.CxDestroy.Value(); got != 1 {
		t.Fatalf("upstream_cx_destroy = %d", got)
	}
	p.Release(c3, false)
}

// TestPoolProbeIgnoresStaleDeadline: a stream leaves its deadline on the
// connection (clearing it costs a timer update per request); the probe of
// an idle connection must not mistake the expired deadline for a dead
// peer.
func TestPoolProbeIgnoresStaleDeadline(t *testing.T) {
	s := newSink(t)
	c := testCluster(t, s.ln.Addr().String(), "")
	p := c.Hosts().Hosts[0].Pool()
	c1, err := p.Acquire(context.Background(), 0, ReuseAny)
	if err != nil {
		t.Fatal(err)
	}
	<-s.conns
	c1.Conn.SetDeadline(time.Now().Add(time.Millisecond))
	p.Release(c1, true)
	time.Sleep(peekAfterIdle + 20*time.Millisecond)
	c2, err := p.Acquire(context.Background(), 0, ReuseAny)
	if err != nil || c2 != c1 {
		t.Fatalf("a live idle connection with an expired deadline was not reused (err %v)", err)
	}
	p.Release(c2, false)
}

func TestPoolPendingAndOverflow(t *testing.T) {
	s := newSink(t)
	c := testCluster(t, s.ln.Addr().String(), `"circuit_breakers":{"thresholds":[{"max_connections":1,"max_pending_requests":1}]},`)
	p := c.Hosts().Hosts[0].Pool()
	ctx := context.Background()
	held, err := p.Acquire(ctx, 0, ReuseAny)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn)
	go func() {
		c2, err := p.Acquire(ctx, 2*time.Second, ReuseAny) // waits: pending
		if err != nil {
			t.Error(err)
		}
		got <- c2
	}()
	waitUntil(t, func() bool { return c.Breaker.Pending.Load() == 1 })
	if _, err := p.Acquire(ctx, time.Second, ReuseAny); !errors.Is(err, ErrPendingOverflow) {
		t.Fatalf("third acquire: %v, want overflow", err)
	}
	p.Release(held, true)
	if c2 := <-got; c2 != held {
		t.Fatal("the released connection was not handed to the waiter")
	}
	if c.Stats.RqPendingOverflow.Value() != 1 || c.Stats.CxOverflow.Value() != 2 {
		t.Fatalf("pending_overflow %d cx_overflow %d", c.Stats.RqPendingOverflow.Value(), c.Stats.CxOverflow.Value())
	}
}

func TestPoolPendingTimeout(t *testing.T) {
	s := newSink(t)
	c := testCluster(t, s.ln.Addr().String(), `"circuit_breakers":{"thresholds":[{"max_connections":1}]},`)
	p := c.Hosts().Hosts[0].Pool()
	if _, err := p.Acquire(context.Background(), 0, ReuseAny); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Acquire(context.Background(), 30*time.Millisecond, ReuseAny); !errors.Is(err, ErrPendingTimeout) {
		t.Fatalf("err %v, want pending timeout", err)
	}
}

func TestConnectFailureIsClassified(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c := testCluster(t, addr, "")
	_, err := c.Hosts().Hosts[0].Pool().Acquire(context.Background(), 0, ReuseAny)
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("err %v, want ConnectError", err)
	}
	if c.Stats.CxConnectFail.Value() != 1 || c.Breaker.Connections.Load() != 0 {
		t.Fatal("connect failure not counted or slot not returned")
	}
}

func TestBuildClusterErrors(t *testing.T) {
	tests := []struct{ name, js, want string }{
		{"static needs ip", `{"name":"c","type":"STATIC","load_assignment":{"cluster_name":"c","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"example.com","port_value":80}}}}]}]}}`, "load_assignment.endpoints[0].lb_endpoints[0]: STATIC cluster needs an IP address"},
		{"eds not ads", `{"name":"c","type":"EDS","eds_cluster_config":{"eds_config":{"path_config_source":{"path":"/x"}}}}`, "eds_cluster_config.eds_config.path_config_source: not supported yet"},
		{"eds with hosts", `{"name":"c","type":"EDS","eds_cluster_config":{"eds_config":{"ads":{}}},"load_assignment":{"cluster_name":"c"}}`, "load_assignment: an EDS cluster takes its endpoints from EDS"},
		{"ring hash", `{"name":"c","lb_policy":"RING_HASH"}`, "lb_policy: RING_HASH is not supported yet"},
		{"health checks", `{"name":"c","health_checks":[{"timeout":"1s","interval":"1s","healthy_threshold":1,"unhealthy_threshold":1,"tcp_health_check":{}}]}`, "health_checks: active health checking is not supported yet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cl clusterv3.Cluster
			if err := protojson.Unmarshal([]byte(tc.js), &cl); err != nil {
				t.Fatal(err)
			}
			_, err := BuildCluster(&cl, stats.NewStore().Root(), slog.Default())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHostWithoutConnectionsMayConnect: max_connections is per cluster,
// but a host with no connection at all may still open one, so that idle
// connections on other hosts cannot starve it.
func TestHostWithoutConnectionsMayConnect(t *testing.T) {
	a, b := newSink(t), newSink(t)
	ha, pa, _ := net.SplitHostPort(a.ln.Addr().String())
	_, pb, _ := net.SplitHostPort(b.ln.Addr().String())
	js := `{"name":"c","connect_timeout":"1s","circuit_breakers":{"thresholds":[{"max_connections":1}]},
		"load_assignment":{"cluster_name":"c","endpoints":[{"lb_endpoints":[
		{"endpoint":{"address":{"socket_address":{"address":"` + ha + `","port_value":` + pa + `}}}},
		{"endpoint":{"address":{"socket_address":{"address":"` + ha + `","port_value":` + pb + `}}}}]}]}}`
	var cl clusterv3.Cluster
	if err := protojson.Unmarshal([]byte(js), &cl); err != nil {
		t.Fatal(err)
	}
	c, err := BuildCluster(&cl, stats.NewStore().Root(), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	hosts := c.Hosts().Hosts
	ca, err := hosts[0].Pool().Acquire(context.Background(), 0, ReuseAny)
	if err != nil {
		t.Fatal(err)
	}
	hosts[0].Pool().Release(ca, true) // idle on host A, holding the only slot
	cb, err := hosts[1].Pool().Acquire(context.Background(), 50*time.Millisecond, ReuseAny)
	if err != nil {
		t.Fatalf("host B starved by host A's idle connection: %v", err)
	}
	hosts[1].Pool().Release(cb, false)
	if got := c.Breaker.Connections.Load(); got != 1 {
		t.Fatalf("connection count drifted to %d", got)
	}
}

// TestBufferLimitBoundsReads: the cluster's per_connection_buffer_limit_bytes
// becomes its connections' read limit.
func TestBufferLimitBoundsReads(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := testCluster(t, ln.Addr().String(), `"per_connection_buffer_limit_bytes":512,`)
	conn, err := c.Hosts().Hosts[0].Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc, ok := conn.(*dedicated).Conn.(*network.TCPConn)
	if !ok || tc.ReadLimit != 512 {
		t.Fatalf("read limit %v, want 512", tc)
	}
}

// TestPoolSweepsClosedIdleConnections: an idle connection the upstream
// closes leaves the pool (and upstream_cx_active) within a sweep, before
// any request meets it; ReuseNone dials a new connection even when an
// idle one is there, and a pool closed while sweeping keeps nothing.
func TestPoolSweepsClosedIdleConnections(t *testing.T) {
	s := newSink(t)
	c := testCluster(t, s.ln.Addr().String(), "")
	p := c.Hosts().Hosts[0].Pool()
	ctx := context.Background()
	c1, err := p.Acquire(ctx, 0, ReuseAny)
	if err != nil {
		t.Fatal(err)
	}
	server1 := <-s.conns
	p.Release(c1, true)
	server1.Close()
	// (While a sweep probes, the idle list is empty and the connection
	// not destroyed yet: wait for both.)
	deadline := time.Now().Add(5 * time.Second)
	for (p.IdleCount() > 0 || c.Stats.CxActive.Value() != 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if p.IdleCount() != 0 || c.Stats.CxActive.Value() != 0 {
		t.Fatalf("idle %d, upstream_cx_active %d after the upstream closed", p.IdleCount(), c.Stats.CxActive.Value())
	}
	c2, err := p.Acquire(ctx, 0, ReuseAny)
	if err != nil {
		t.Fatal(err)
	}
	<-s.conns
	p.Release(c2, true)
	c3, err := p.Acquire(ctx, 0, ReuseNone)
	if err != nil {
		t.Fatal(err)
	}
	if c3 == c2 || c3.Reused {
		t.Fatal("ReuseNone lent an idle connection")
	}
	p.Release(c3, true)
	p.Close()
	if p.IdleCount() != 0 {
		t.Fatal("a closed pool keeps idle connections")
	}
}

// TestDedicatedDialCountsDialing: a TCP proxy's dial goes through the
// pool's dialing count and leaves it at zero (a negative count would
// deny the host its first-connection exception).
func TestDedicatedDialCountsDialing(t *testing.T) {
	s := newSink(t)
	c := testCluster(t, s.ln.Addr().String(), "")
	h := c.Hosts().Hosts[0]
	nc, err := h.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	h.Pool().mu.Lock()
	n := h.Pool().dialing
	h.Pool().mu.Unlock()
	if n != 0 {
		t.Fatalf("dialing = %d after a dedicated dial", n)
	}
}
