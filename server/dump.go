package server

import (
	"fmt"
	"net/http"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
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

// WriteClusters implements admin.Source in Envoy's text form:
// "cluster::host::stat::value".
func (s *Server) WriteClusters(w http.ResponseWriter) {
	cm := s.clusters.m.Load()
	for _, name := range cm.Names() {
		c, _ := cm.Get(name)
		b := c.Breaker
		fmt.Fprintf(w, "%s::default_priority::max_connections::%d\n", name, b.MaxConnections)
		fmt.Fprintf(w, "%s::default_priority::max_pending_requests::%d\n", name, b.MaxPendingRequests)
		fmt.Fprintf(w, "%s::default_priority::max_requests::%d\n", name, b.MaxRequests)
		fmt.Fprintf(w, "%s::default_priority::max_retries::%d\n", name, b.MaxRetries)
		for _, h := range c.Hosts().Hosts {
			p := name + "::" + h.Addr + "::"
			fmt.Fprintf(w, "%scx_active::%d\n%scx_total::%d\n%scx_connect_fail::%d\n", p, h.CxActive.Load(), p, h.CxTotal.Load(), p, h.CxFail.Load())
			fmt.Fprintf(w, "%srq_active::%d\n%srq_total::%d\n%srq_success::%d\n%srq_error::%d\n", p, h.Active.Load(), p, h.RqTotal.Load(), p, h.RqSuccess.Load(), p, h.RqError.Load())
			fmt.Fprintf(w, "%sweight::%d\n%shealth_flags::healthy\n", p, h.Weight, p)
		}
	}
}
