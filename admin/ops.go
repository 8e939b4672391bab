package admin

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/straitproxy/strait/internal/tracelog"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The operations endpoints (Envoy's): what they need of the server is
// asked for with these interfaces, so a Source without one answers 501.
type (
	serverInfoer   interface{ ServerInfo() *adminv3.ServerInfo }
	listenerLister interface {
		// ListenerAddrs lists the active listeners and their bound
		// addresses, in config order.
		ListenerAddrs() []NamedAddr
	}
	healthChecker interface{ SetHealthCheckFailed(failed bool) }
	quitter       interface{ Quit() }
	logLeveler    interface{ LogLevels() *tracelog.Levels }
	certLister    interface{ Certificates() *adminv3.Certificates }
)

// NamedAddr is a listener's name and bound address.
type NamedAddr struct {
	Name string
	Addr net.Addr
}

func (s *Server) ops(mux *http.ServeMux) {
	mux.HandleFunc("GET /server_info", s.serverInfo)
	mux.HandleFunc("GET /listeners", s.listeners)
	mux.HandleFunc("GET /logging", s.logging)
	mux.HandleFunc("POST /logging", s.logging)
	mux.HandleFunc("POST /healthcheck/fail", s.healthcheck(true))
	mux.HandleFunc("POST /healthcheck/ok", s.healthcheck(false))
	mux.HandleFunc("POST /quitquitquit", s.quit)
	mux.HandleFunc("GET /memory", s.memory)
	mux.HandleFunc("GET /certs", s.certs)
	mux.HandleFunc("GET /hot_restart_version", s.hotRestartVersion)
}

// capability is the server's source as T (an optional part of it), or
// answers 501 saying what is not available.
func capability[T any](s *Server, w http.ResponseWriter, what string) (T, bool) {
	v, ok := s.src.(T)
	if !ok {
		http.Error(w, what+" is not available", http.StatusNotImplemented)
	}
	return v, ok
}

// writeLine answers a plain-text line.
func writeLine(w http.ResponseWriter, line any) {
	w.Header().Set("content-type", "text/plain")
	fmt.Fprintln(w, line)
}

func writeProto(w http.ResponseWriter, m proto.Message) {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true, EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("content-type", "application/json")
	w.Write(b)
	w.Write([]byte("\n"))
}

func (s *Server) serverInfo(w http.ResponseWriter, _ *http.Request) {
	si, ok := capability[serverInfoer](s, w, "server_info")
	if !ok {
		return
	}
	writeProto(w, si.ServerInfo())
}

// certs is Envoy's /certs: the certificates of every TLS context in use
// (listeners' filter chains, clusters), never a key.
func (s *Server) certs(w http.ResponseWriter, _ *http.Request) {
	cl, ok := capability[certLister](s, w, "certs")
	if !ok {
		return
	}
	writeProto(w, cl.Certificates())
}

// resetCounters is Envoy's POST /reset_counters: every counter back to
// zero (debugging with /stats; Prometheus sees a counter reset).
func (s *Server) resetCounters(w http.ResponseWriter, _ *http.Request) {
	s.stats.ResetCounters()
	writeLine(w, "OK")
}

// hotRestartVersion is Envoy's /hot_restart_version: the hot restart
// protocol a new epoch must speak ("disabled" without --base-id).
func (s *Server) hotRestartVersion(w http.ResponseWriter, _ *http.Request) {
	si, ok := capability[serverInfoer](s, w, "hot_restart_version")
	if !ok {
		return
	}
	writeLine(w, si.ServerInfo().GetHotRestartVersion())
}

// listeners is Envoy's /listeners: "name::address" lines, or with
// ?format=json the envoy.admin.v3.Listeners message.
func (s *Server) listeners(w http.ResponseWriter, r *http.Request) {
	ll, ok := capability[listenerLister](s, w, "listeners")
	if !ok {
		return
	}
	list := ll.ListenerAddrs()
	if r.URL.Query().Get("format") == "json" {
		out := &adminv3.Listeners{}
		for _, l := range list {
			st := &adminv3.ListenerStatus{Name: l.Name}
			if ta, ok := l.Addr.(*net.TCPAddr); ok {
				st.LocalAddress = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: ta.IP.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ta.Port)}}}}
			}
			out.ListenerStatuses = append(out.ListenerStatuses, st)
		}
		writeProto(w, out)
		return
	}
	w.Header().Set("content-type", "text/plain")
	for _, l := range list {
		addr := "-"
		if l.Addr != nil {
			addr = l.Addr.String()
		}
		fmt.Fprintf(w, "%s::%s\n", l.Name, addr)
	}
}

// logging is Envoy's /logging: GET lists the loggers and their levels;
// POST ?level=L sets them all, ?paths=name:level,... some.
func (s *Server) logging(w http.ResponseWriter, r *http.Request) {
	ll, ok := s.src.(logLeveler)
	var lv *tracelog.Levels
	if ok {
		lv = ll.LogLevels()
	}
	if lv == nil {
		http.Error(w, "log levels cannot be changed in this process", http.StatusNotImplemented)
		return
	}
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		if q.Has("level") == q.Has("paths") {
			http.Error(w, "give one of ?level=LEVEL or ?paths=LOGGER:LEVEL,...", http.StatusBadRequest)
			return
		}
		if q.Has("level") {
			if err := lv.Set("", q.Get("level")); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		} else {
			// All or nothing: every pair is checked before any is set.
			type pair struct{ name, level string }
			var pairs []pair
			for _, p := range strings.Split(q.Get("paths"), ",") {
				name, level, ok := strings.Cut(strings.TrimSpace(p), ":")
				if _, err := tracelog.ParseLevel(level); !ok || name == "" || err != nil {
					http.Error(w, fmt.Sprintf("bad ?paths entry %q: want LOGGER:LEVEL", p), http.StatusBadRequest)
					return
				}
				if err := lv.Check(name); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				pairs = append(pairs, pair{name, level})
			}
			for _, p := range pairs {
				lv.Set(p.name, p.level)
			}
		}
	} else if len(q) > 0 {
		http.Error(w, "changing levels needs POST", http.StatusMethodNotAllowed)
		return
	}
	writeLine(w, "active loggers:")
	for _, l := range lv.List() {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

// healthcheck is /healthcheck/fail and /healthcheck/ok: failing makes
// /ready answer 503 DRAINING (so a load balancer takes the proxy out)
// while everything keeps serving.
func (s *Server) healthcheck(failed bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		hc, ok := capability[healthChecker](s, w, "health checking")
		if !ok {
			return
		}
		hc.SetHealthCheckFailed(failed)
		writeLine(w, "OK")
	}
}

// quit is /quitquitquit: the process drains and exits, as on SIGTERM.
func (s *Server) quit(w http.ResponseWriter, _ *http.Request) {
	q, ok := capability[quitter](s, w, "quitting")
	if !ok {
		return
	}
	writeLine(w, "OK")
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	q.Quit()
}

// memory is Envoy's /memory (envoy.admin.v3.Memory) from Go's
// allocator: allocated is the live heap, heap_size what the heap holds
// from the OS, pageheap_free and pageheap_unmapped its idle parts kept
// and returned, total_thread_cache the per-P caches,
// total_physical_bytes what the runtime holds less what it returned.
func (s *Server) memory(w http.ResponseWriter, _ *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	writeProto(w, &adminv3.Memory{
		Allocated: ms.HeapAlloc, HeapSize: ms.HeapSys, PageheapUnmapped: ms.HeapReleased,
		PageheapFree: ms.HeapIdle - ms.HeapReleased, TotalThreadCache: ms.MCacheInuse,
		TotalPhysicalBytes: ms.Sys - ms.HeapReleased,
	})
}

// statsQuery reads /stats' parameters: filter (a regular expression),
// usedonly, histogram_buckets.
func statsQuery(r *http.Request) (stats.Query, error) {
	q := r.URL.Query()
	var out stats.Query
	if f := q.Get("filter"); f != "" {
		re, err := regexp.Compile(f)
		if err != nil {
			return out, fmt.Errorf("Invalid regex: %v", err)
		}
		out.Filter = re
	}
	out.UsedOnly = q.Has("usedonly")
	out.Buckets = q.Get("histogram_buckets")
	if !stats.ValidBuckets(out.Buckets) {
		return out, fmt.Errorf("histogram_buckets: %s (want cumulative, disjoint or none)", strconv.Quote(out.Buckets))
	}
	return out, nil
}
