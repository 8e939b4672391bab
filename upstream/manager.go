package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
)

// Manager is the set of clusters, looked up by name. It is immutable once
// built; a config change builds a new one.
type Manager struct {
	clusters map[string]*Cluster
	names    []string
}

// Build validates and builds every cluster; any error fails the whole set
// and names the cluster's path ("clusters[2].lb_policy: ...").
func Build(cls []*clusterv3.Cluster, sc *stats.Scope, log *slog.Logger, env Env) (*Manager, error) {
	m := &Manager{clusters: map[string]*Cluster{}}
	var errs []error
	for i, cl := range cls {
		path := fmt.Sprintf("clusters[%d]", i)
		if _, dup := m.clusters[cl.GetName()]; dup {
			errs = append(errs, config.At(path+".name", fmt.Errorf("duplicate cluster name %q", cl.GetName())))
			continue
		}
		c, err := BuildClusterWith(cl, sc, log, env)
		if err != nil {
			errs = append(errs, config.At(path, err))
			continue
		}
		m.clusters[c.Name] = c
		m.names = append(m.names, c.Name)
	}
	if len(errs) > 0 {
		for _, c := range m.clusters {
			c.Stop() // its DNS and outlier detection goroutines end
		}
		return nil, config.Join(errs)
	}
	sort.Strings(m.names)
	return m, nil
}

// NewManager makes a manager of clusters already built (an xDS update
// mixes the static clusters with the dynamic ones).
func NewManager(cls []*Cluster) *Manager {
	m := &Manager{clusters: make(map[string]*Cluster, len(cls))}
	for _, c := range cls {
		m.clusters[c.Name] = c
		m.names = append(m.names, c.Name)
	}
	sort.Strings(m.names)
	return m
}

// Start resolves DNS clusters (waiting for the first answers up to ctx).
func (m *Manager) Start(ctx context.Context) {
	for _, c := range m.clusters {
		c.Start(ctx)
	}
}

// Get returns the cluster named name.
func (m *Manager) Get(name string) (*Cluster, bool) {
	c, ok := m.clusters[name]
	return c, ok
}

// Names lists the clusters, sorted.
func (m *Manager) Names() []string { return m.names }

// Stop stops every cluster.
func (m *Manager) Stop() {
	for _, c := range m.clusters {
		c.Stop()
	}
}
