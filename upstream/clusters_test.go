package upstream

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func res(t *testing.T, name string, m proto.Message, js string) *config.Resource {
	t.Helper()
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatal(err)
	}
	return &config.Resource{Name: name, Message: m}
}

func dynEDS(t *testing.T, name string) *config.Resource {
	return res(t, name, &clusterv3.Cluster{}, `{"name":"`+name+`","type":"EDS","connect_timeout":"1s","eds_cluster_config":{"eds_config":{"ads":{}}}}`)
}

func assignment(t *testing.T, name string) *config.Resource {
	return res(t, name, &endpointv3.ClusterLoadAssignment{}, `{"cluster_name":"`+name+`","endpoints":[{"lb_endpoints":[{"endpoint":{"address":{"socket_address":{"address":"127.0.0.1","port_value":1}}}}]}]}`)
}

func newTestClusters(t *testing.T, linger time.Duration) *Clusters {
	empty, err := Build(nil, stats.NewStore().Root(), slog.New(slog.NewTextHandler(io.Discard, nil)), Env{})
	if err != nil {
		t.Fatal(err)
	}
	m := NewClusters(empty, stats.NewStore().Root(), slog.New(slog.NewTextHandler(io.Discard, nil)), ClustersOptions{CDS: true, Linger: linger})
	t.Cleanup(m.Stop)
	return m
}

// TestRemovedAssignmentKeepsHosts: an assignment removed (delta) leaves
// its cluster's endpoints in place and counts update_empty, as Envoy.
func TestRemovedAssignmentKeepsHosts(t *testing.T) {
	m := newTestClusters(t, 0)
	m.ApplyCDS(map[string]*config.Resource{"c": dynEDS(t, "c")}, nil)
	m.ApplyEDS(map[string]*config.Resource{"c": assignment(t, "c")})
	c, ok := m.Get("c")
	if !ok || len(c.Hosts().Hosts) != 1 {
		t.Fatal("c not serving with its endpoint")
	}
	m.ApplyEDS(map[string]*config.Resource{})
	if len(c.Hosts().Hosts) != 1 || c.Stats.UpdateEmpty.Value() != 1 {
		t.Fatalf("hosts %d, update_empty %d", len(c.Hosts().Hosts), c.Stats.UpdateEmpty.Value())
	}
}

// TestRemovedClusterLingers: a cluster CDS removes while routes name it
// serves until Release says no route does (plus the grace), or until the
// linger bound.
func TestRemovedClusterLingers(t *testing.T) {
	m := newTestClusters(t, 300*time.Millisecond)
	m.ApplyCDS(map[string]*config.Resource{"c": dynEDS(t, "c")}, nil)
	m.ApplyEDS(map[string]*config.Resource{"c": assignment(t, "c")})
	m.ApplyCDS(map[string]*config.Resource{}, map[string]bool{"c": true})
	if _, ok := m.Get("c"); !ok {
		t.Fatal("a removed cluster that routes name went at once")
	}
	m.Release(map[string]bool{"c": true})
	time.Sleep(100 * time.Millisecond)
	if _, ok := m.Get("c"); !ok {
		t.Fatal("released while still named")
	}
	m.Release(map[string]bool{})
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, ok := m.Get("c"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still serving after its release")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Not named at all: it goes at once.
	m.ApplyCDS(map[string]*config.Resource{"d": dynEDS(t, "d")}, nil)
	m.ApplyEDS(map[string]*config.Resource{"d": assignment(t, "d")})
	m.ApplyCDS(map[string]*config.Resource{}, nil)
	if _, ok := m.Get("d"); ok {
		t.Fatal("an unnamed removed cluster lingered")
	}
}

// TestAwaitWarmingCluster: Await returns a warming cluster once its
// endpoints arrive, and at once for a name nothing warms.
func TestAwaitWarmingCluster(t *testing.T) {
	m := newTestClusters(t, 0)
	m.ApplyCDS(map[string]*config.Resource{"w": dynEDS(t, "w")}, nil)
	if _, ok := m.Get("w"); ok {
		t.Fatal("serving before its endpoints")
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		m.ApplyEDS(map[string]*config.Resource{"w": assignment(t, "w")})
	}()
	start := time.Now()
	if c, ok := m.Await(context.Background(), "w", 2*time.Second); !ok || c.Name != "w" {
		t.Fatal("Await gave up on a warming cluster")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("returned after %v, before the endpoints", d)
	}
	start = time.Now()
	if _, ok := m.Await(context.Background(), "nothing", 2*time.Second); ok || time.Since(start) > 50*time.Millisecond {
		t.Fatal("Await waited for a cluster nothing warms")
	}
}

// TestAltStatNameStats: clusters sharing an alt_stat_name share its
// stats, which stay while any of them is left; a cluster whose update
// changes its alt_stat_name leaves its old stats behind it.
func TestAltStatNameStats(t *testing.T) {
	store := stats.NewStore()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	empty, err := Build(nil, store.Root(), discard, Env{})
	if err != nil {
		t.Fatal(err)
	}
	m := NewClusters(empty, store.Root(), discard, ClustersOptions{CDS: true})
	t.Cleanup(m.Stop)
	named := func(name, alt string) *config.Resource {
		return res(t, name, &clusterv3.Cluster{}, `{"name":"`+name+`","alt_stat_name":"`+alt+`","type":"EDS","connect_timeout":"1s","eds_cluster_config":{"eds_config":{"ads":{}}}}`)
	}
	has := func(stat string) bool { _, ok := store.Lookup(stat); return ok }
	m.ApplyCDS(map[string]*config.Resource{"a": named("a", "shared"), "b": named("b", "shared")}, nil)
	m.ApplyEDS(map[string]*config.Resource{"a": assignment(t, "a"), "b": assignment(t, "b")})
	if !has("cluster.shared.update_empty") || has("cluster.a.update_empty") {
		t.Fatal("stats not under the alt_stat_name")
	}
	m.ApplyCDS(map[string]*config.Resource{"b": named("b", "shared")}, nil)
	if !has("cluster.shared.update_empty") {
		t.Fatal("removing a took the stats b still counts into")
	}
	m.ApplyCDS(map[string]*config.Resource{"b": named("b", "renamed")}, nil)
	m.ApplyEDS(map[string]*config.Resource{"b": assignment(t, "b")})
	if has("cluster.shared.update_empty") || !has("cluster.renamed.update_empty") {
		t.Fatalf("after b's alt_stat_name changed: shared %v, renamed %v", has("cluster.shared.update_empty"), has("cluster.renamed.update_empty"))
	}
	// A warming cluster replaced by a new version (both waiting for
	// their endpoints): the stats stay for the new one.
	w := func(timeout string) *config.Resource {
		return res(t, "w", &clusterv3.Cluster{}, `{"name":"w","type":"EDS","connect_timeout":"`+timeout+`","eds_cluster_config":{"eds_config":{"ads":{}}}}`)
	}
	m.ApplyCDS(map[string]*config.Resource{"b": named("b", "renamed"), "w": w("1s")}, nil)
	m.ApplyCDS(map[string]*config.Resource{"b": named("b", "renamed"), "w": w("2s")}, nil)
	if !has("cluster.w.update_empty") {
		t.Fatal("replacing a warming cluster dropped the stats its new version counts into")
	}
}
