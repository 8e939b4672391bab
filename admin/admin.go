// Package admin is the admin HTTP server: readiness, stats (text, JSON,
// Prometheus), the config dump with secrets redacted, and the clusters
// page. It binds to loopback unless told otherwise. It declares the small
// interfaces it reads; the server hands them over. admin imports stats and
// the API types only.
package admin

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

//go:embed ui/index.html
var pageHTML []byte

// Source is what the admin pages read from the running server.
type Source interface {
	// Ready reports whether the server is serving (not starting, not
	// draining).
	Ready() bool
	// ConfigDump returns the effective configuration; admin redacts it.
	ConfigDump() proto.Message
	// WriteClusters writes the /clusters page.
	WriteClusters(w http.ResponseWriter)
	// ReopenLogs reopens the access log files (and this server's).
	ReopenLogs()
}

// Server is the admin HTTP server.
type Server struct {
	src   Source
	stats *stats.Store
	log   *slog.Logger
	srv   *http.Server
	ln    net.Listener
}

// New makes an admin server; it binds nothing until Start.
func New(src Source, st *stats.Store, log *slog.Logger) *Server {
	s := &Server{src: src, stats: st, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /stats", s.statsPage)
	mux.HandleFunc("GET /stats/prometheus", s.prometheus)
	mux.HandleFunc("GET /config_dump", s.configDump)
	mux.HandleFunc("GET /clusters", s.clusters)
	mux.HandleFunc("GET /runtime", s.runtimePage)
	mux.HandleFunc("POST /runtime_modify", s.runtimeModify)
	mux.HandleFunc("POST /drain_listeners", s.drainListeners)
	mux.HandleFunc("POST /reopen_logs", s.reopenLogs)
	mux.HandleFunc("POST /reset_counters", s.resetCounters)
	s.ops(mux)
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /help", s.index)
	// Go's profiler (CPU, heap, goroutines), as Envoy's /cpuprofiler and
	// /heapprofiler; the admin server is loopback-only by default.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// CheckAddress refuses a non-loopback address unless allowRemote.
func CheckAddress(host string, allowRemote bool) error {
	if allowRemote {
		return nil
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("admin address %q is not a loopback address; pass --admin-allow-remote to expose the admin API", host)
}

// Start binds addr (or takes the socket a hot restart handed over for
// it) and serves.
func (s *Server) Start(addr string) error {
	ln, err := network.ListenTCP(addr)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	s.ln = ln
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin server stopped", "err", err)
		}
	}()
	return nil
}

// Addr is the bound address; nil before Start.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// ListenFile duplicates the admin's listening socket (hot restart).
func (s *Server) ListenFile() (*os.File, error) {
	if s.ln == nil {
		return nil, errors.New("admin: not listening")
	}
	return network.ListenerFile(s.ln)
}

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// reopenLogs is Envoy's /reopen_logs: access log files are written out,
// closed and opened again at their paths (after a rotation's mv).
func (s *Server) reopenLogs(w http.ResponseWriter, _ *http.Request) {
	s.src.ReopenLogs()
	w.Header().Set("content-type", "text/plain")
	fmt.Fprint(w, "OK\n")
}

// page is the live admin page: one HTML file, no external assets, that
// polls /stats?format=json, /server_info, /listeners and /clusters.
func (s *Server) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("content-type", "text/html; charset=utf-8")
	w.Header().Set("content-security-policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	w.Write(pageHTML)
}

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("content-type", "text/plain")
	fmt.Fprint(w, `strait admin
  /  (the live page)
  /help
  /ready
  /server_info
  /stats (?format=json, ?filter=REGEX, ?usedonly, ?histogram_buckets=cumulative|disjoint|none)
  /stats/prometheus
  /config_dump
  /clusters
  /listeners (?format=json)
  /runtime
  /memory
  /certs
  /hot_restart_version
  /logging; POST /logging?level=LEVEL or ?paths=LOGGER:LEVEL,...
  POST /runtime_modify?key=value
  POST /drain_listeners (?inboundonly, ?graceful)
  POST /healthcheck/fail, POST /healthcheck/ok
  POST /reopen_logs
  POST /reset_counters
  POST /quitquitquit
  /debug/pprof/
`)
}

// drainListeners is Envoy's POST /drain_listeners: ?inboundonly drains
// only listeners with traffic_direction INBOUND, ?graceful keeps them
// accepting (and draining what comes) for the drain time first.
func (s *Server) drainListeners(w http.ResponseWriter, r *http.Request) {
	d, ok := capability[interface {
		DrainListeners(inboundOnly, graceful bool)
	}](s, w, "draining")
	if !ok {
		return
	}
	q := r.URL.Query()
	d.DrainListeners(q.Has("inboundonly"), q.Has("graceful"))
	writeLine(w, "OK")
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("content-type", "text/plain")
	if s.src.Ready() {
		fmt.Fprintln(w, "LIVE")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	state := "DRAINING"
	if st, ok := s.src.(interface{ ReadyState() string }); ok {
		state = st.ReadyState()
	}
	fmt.Fprintln(w, state)
}

func (s *Server) statsPage(w http.ResponseWriter, r *http.Request) {
	q, err := statsQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.URL.Query().Get("format") == "json" {
		w.Header().Set("content-type", "application/json")
		s.stats.WriteJSON(w, q)
		return
	}
	w.Header().Set("content-type", "text/plain")
	s.stats.WriteText(w, q)
}

func (s *Server) prometheus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("content-type", "text/plain; version=0.0.4")
	s.stats.WritePrometheus(w)
}

func (s *Server) configDump(w http.ResponseWriter, _ *http.Request) {
	dump := proto.Clone(s.src.ConfigDump())
	Redact(dump)
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", Resolver: opaqueUnknown{}}.Marshal(dump)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("content-type", "application/json")
	w.Write(b)
}

func (s *Server) clusters(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("content-type", "text/plain")
	s.src.WriteClusters(w)
}

// opaqueUnknown resolves the types of Any values for the config dump; a
// type this binary does not know (a refused resource's unknown filter,
// say) is shown as its "@type" alone instead of failing the whole dump.
type opaqueUnknown struct{}

func (opaqueUnknown) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if errors.Is(err, protoregistry.NotFound) {
		return dynamicpb.NewMessageType((&emptypb.Empty{}).ProtoReflect().Descriptor()), nil
	}
	return mt, err
}

func (opaqueUnknown) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	return protoregistry.GlobalTypes.FindMessageByName(name)
}

func (opaqueUnknown) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(field)
}

func (opaqueUnknown) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
}
