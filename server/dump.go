package server

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/transport"
	"github.com/straitproxy/strait/xds"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ConfigDump implements admin.Source: the bootstrap, the static listeners
// and the static clusters, as Envoy's /config_dump shapes them.
func (s *Server) ConfigDump() proto.Message {
	ts := timestamppb.New(s.loaded)
	boot := &adminv3.BootstrapConfigDump{Bootstrap: s.boot, LastUpdated: ts}
	ls := &adminv3.ListenersConfigDump{}
	for _, l := range s.boot.GetStaticResources().GetListeners() {
		a, _ := anypb.New(l)
		ls.StaticListeners = append(ls.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{Listener: a, LastUpdated: ts})
	}
	cs := &adminv3.ClustersConfigDump{}
	for _, c := range s.boot.GetStaticResources().GetClusters() {
		a, _ := anypb.New(c)
		cs.StaticClusters = append(cs.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: a, LastUpdated: ts})
	}
	dump := &adminv3.ConfigDump{}
	msgs := []proto.Message{boot, cs, ls}
	if s.dyn != nil {
		msgs = append(msgs, s.dyn.dump(cs, ls)...)
	}
	for _, m := range msgs {
		a, _ := anypb.New(m)
		dump.Configs = append(dump.Configs, a)
	}
	return dump
}

// Certificates is the admin's /certs: the TLS contexts of the serving
// listeners' filter chains, then of the clusters, each with its trusted
// CAs and the leaf of each of its certificates.
func (s *Server) Certificates() *adminv3.Certificates {
	now := time.Now()
	out := &adminv3.Certificates{}
	for _, l := range s.serving() {
		out.Certificates = append(out.Certificates, l.Certificates(now)...)
	}
	cm := s.clusters.Current()
	for _, name := range cm.Names() {
		c, _ := cm.Get(name)
		for _, ts := range c.Sockets() {
			out.Certificates = transport.AppendCertificates(out.Certificates, ts, now)
		}
	}
	return out
}

// WriteClusters implements admin.Source in Envoy's text form:
// "cluster::host::stat::value".
func (s *Server) WriteClusters(w http.ResponseWriter) {
	cm := s.clusters.Current()
	for _, name := range cm.Names() {
		c, _ := cm.Get(name)
		b := c.Breaker
		fmt.Fprintf(w, "%s::default_priority::max_connections::%d\n", name, b.MaxConnections)
		fmt.Fprintf(w, "%s::default_priority::max_pending_requests::%d\n", name, b.MaxPendingRequests)
		fmt.Fprintf(w, "%s::default_priority::max_requests::%d\n", name, b.MaxRequests)
		fmt.Fprintf(w, "%s::default_priority::max_retries::%d\n", name, b.MaxRetries)
		for _, h := range c.Hosts().All {
			p := name + "::" + h.Addr + "::"
			fmt.Fprintf(w, "%scx_active::%d\n%scx_total::%d\n%scx_connect_fail::%d\n", p, h.CxActive.Load(), p, h.CxTotal.Load(), p, h.CxFail.Load())
			fmt.Fprintf(w, "%srq_active::%d\n%srq_total::%d\n%srq_success::%d\n%srq_error::%d\n", p, h.Active.Load(), p, h.RqTotal.Load(), p, h.RqSuccess.Load(), p, h.RqError.Load())
			fmt.Fprintf(w, "%sweight::%d\n%shealth_flags::%s\n", p, h.Weight(), p, h.HealthFlags())
		}
	}
}

// dump adds the dynamic resources to Envoy's config dump shapes: active
// and warming clusters and listeners, then the route, endpoint and secret
// dumps. A resource the last update refused carries its error_state; one
// never accepted appears with the error alone.
func (d *dynamic) dump(cs *adminv3.ClustersConfigDump, ls *adminv3.ListenersConfigDump) []proto.Message {
	d.mu.Lock()
	failed := map[string]map[string]*adminv3.UpdateFailureState{}
	for url, m := range d.failed {
		failed[url] = maps.Clone(m)
	}
	d.mu.Unlock()
	cs.VersionInfo = d.version(d.cdsSource, xds.ClusterType)
	ls.VersionInfo = d.version(d.ldsSource, xds.ListenerType)

	cd := d.clusters.Dump()
	fc := failed[xds.ClusterType]
	for _, r := range cd.Active {
		cs.DynamicActiveClusters = append(cs.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: r.Version, Cluster: r.Any, LastUpdated: timestamppb.New(r.Updated), ErrorState: fc[r.Name]})
		delete(fc, r.Name)
	}
	for _, r := range cd.Warming {
		cs.DynamicWarmingClusters = append(cs.DynamicWarmingClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: r.Version, Cluster: r.Any, LastUpdated: timestamppb.New(r.Updated), ErrorState: fc[r.Name]})
		delete(fc, r.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(fc)) {
		cs.DynamicActiveClusters = append(cs.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{ErrorState: fc[name]})
	}

	lstates, routes, routeNames := d.listeners.Dump()
	fl := failed[xds.ListenerType]
	state := func(r *config.Resource) *adminv3.ListenersConfigDump_DynamicListenerState {
		if r == nil {
			return nil
		}
		return &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: r.Version, Listener: r.Any, LastUpdated: timestamppb.New(r.Updated)}
	}
	for _, st := range lstates {
		ls.DynamicListeners = append(ls.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
			Name: st.Name, ActiveState: state(st.Active), WarmingState: state(st.Warming), ErrorState: fl[st.Name]})
		delete(fl, st.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(fl)) {
		ls.DynamicListeners = append(ls.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{Name: name, ErrorState: fl[name]})
	}

	rs := &adminv3.RoutesConfigDump{}
	fr := failed[xds.RouteType]
	for i, r := range routes {
		fail := fr[routeNames[i]]
		if r != nil {
			rs.DynamicRouteConfigs = append(rs.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
				VersionInfo: r.Version, RouteConfig: r.Any, LastUpdated: timestamppb.New(r.Updated), ErrorState: fail})
		} else if fail != nil {
			rs.DynamicRouteConfigs = append(rs.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{ErrorState: fail})
		}
	}
	es := &adminv3.EndpointsConfigDump{}
	for _, r := range cd.Endpoints {
		es.DynamicEndpointConfigs = append(es.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: r.Version, EndpointConfig: r.Any, LastUpdated: timestamppb.New(r.Updated)})
	}
	ss := &adminv3.SecretsConfigDump{}
	for _, r := range d.secrets.Dump() {
		ss.DynamicActiveSecrets = append(ss.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
			Name: r.Name, VersionInfo: r.Version, Secret: r.Any, LastUpdated: timestamppb.New(r.Updated)})
	}
	return []proto.Message{rs, es, ss}
}
