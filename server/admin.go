package server

import (
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/admin"
	"github.com/straitproxy/strait/internal/tracelog"
	"github.com/straitproxy/strait/listener"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// What the admin's operations endpoints read and do (admin/ops.go).

// ServerInfo is /server_info: version, state, uptime, the command line
// and the node.
func (s *Server) ServerInfo() *adminv3.ServerInfo {
	state := adminv3.ServerInfo_LIVE
	switch s.ReadyState() {
	case "INITIALIZING":
		state = adminv3.ServerInfo_INITIALIZING
	case "DRAINING":
		state = adminv3.ServerInfo_DRAINING
	}
	si := &adminv3.ServerInfo{
		Version: "strait/" + s.opts.Version, State: state,
		UptimeCurrentEpoch: durationpb.New(time.Since(s.loaded).Truncate(time.Second)),
		UptimeAllEpochs:    durationpb.New(time.Since(time.Unix(0, s.firstUp.Load())).Truncate(time.Second)),
		HotRestartVersion:  "disabled", Node: s.node(),
	}
	if s.upgradeLn.Load() != nil {
		si.HotRestartVersion = "strait.1"
	}
	if s.opts.CommandLine != nil {
		si.CommandLineOptions = proto.Clone(s.opts.CommandLine).(*adminv3.CommandLineOptions)
	}
	return si
}

// ListenerAddrs lists the static listeners, then the dynamic ones that
// are serving, with their bound addresses.
func (s *Server) ListenerAddrs() []admin.NamedAddr {
	var out []admin.NamedAddr
	for _, l := range s.serving() {
		out = append(out, admin.NamedAddr{Name: l.Name, Addr: l.Addr()})
	}
	return out
}

// serving lists the static listeners, then the active dynamic ones.
func (s *Server) serving() []*listener.Listener {
	out := append([]*listener.Listener(nil), s.listeners...)
	if s.dyn != nil {
		out = append(out, s.dyn.listeners.Active()...)
	}
	return out
}

// SetHealthCheckFailed is /healthcheck/fail (true) and /healthcheck/ok:
// a failed server answers /ready with 503 DRAINING and keeps serving.
func (s *Server) SetHealthCheckFailed(failed bool) {
	s.healthFailed.Store(failed)
	if failed {
		s.log.Info("health check failed by the admin API")
	} else {
		s.log.Info("health check passing again by the admin API")
	}
}

// Quit is /quitquitquit: Quitting's channel closes; the process drains
// and exits as on SIGTERM.
func (s *Server) Quit() { s.quitOnce.Do(func() { close(s.quit) }) }

// Quitting is closed once /quitquitquit was called.
func (s *Server) Quitting() <-chan struct{} { return s.quit }

// fileStats are the access log files' counters, filesystem.*.
func fileStats(root *stats.Scope) accesslog.Stats {
	fs := root.Scope("filesystem", "", "")
	c := func(i int) *stats.Counter { return fs.Counter(accesslog.StatNames[i]) }
	return accesslog.Stats{WriteBuffered: c(0), WriteCompleted: c(1), WriteFailed: c(2), FlushedByTimer: c(3),
		ReopenFailed: c(4), LinesDropped: c(5), TotalBuffered: fs.Gauge(accesslog.StatNames[6])}
}

// AdoptParent takes over what a hot restart's parent counted: its
// counters are added to this process's, and its family's start time is
// uptime_all_epochs' origin.
func (s *Server) AdoptParent(counters map[string]uint64, firstUp time.Time) {
	s.store.CarryOver(counters)
	if !firstUp.IsZero() && firstUp.UnixNano() < s.firstUp.Load() {
		s.firstUp.Store(firstUp.UnixNano())
	}
}

// ParentDraining is what the draining previous epoch reports: what it
// counted since it last said (added to ours) and how many connections
// it still has (server.parent_connections).
func (s *Server) ParentDraining(counters map[string]uint64, conns int) {
	s.store.CarryOver(counters)
	s.parentConns.Store(int64(conns))
}

// LogLevels returns the levels /logging changes (nil: fixed).
func (s *Server) LogLevels() *tracelog.Levels { return s.opts.LogLevels }
