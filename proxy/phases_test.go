package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/upstream"
	"google.golang.org/protobuf/encoding/protojson"
)

// The phases of a request that need no upstream, driven through Stream.run
// with a fake downstream stream: header preparation, stream filters,
// routing and the local replies.

type fakeSocket struct{}

func (fakeSocket) Read([]byte) (int, error)    { return 0, io.EOF }
func (fakeSocket) Write(p []byte) (int, error) { return len(p), nil }
func (fakeSocket) Close() error                { return nil }
func (fakeSocket) CloseWrite() error           { return nil }
func (fakeSocket) LocalAddr() net.Addr         { return fakeLocal }
func (fakeSocket) RemoteAddr() net.Addr        { return fakeRemote }

// The addresses are made once, as a TCP connection's are.
var (
	fakeLocal  net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}
	fakeRemote net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}
)

// fakeStream is a downstream request with no body; it records the answer.
type fakeStream struct {
	req      protocol.Headers
	resp     protocol.Headers
	body     []byte
	finished bool
	reset    bool
}

func (f *fakeStream) Request() *protocol.Headers         { return &f.req }
func (f *fakeStream) HeadersOnly() bool                  { return true }
func (f *fakeStream) ReadData() ([]byte, error)          { return nil, io.EOF }
func (f *fakeStream) RequestTrailers() *protocol.Headers { return nil }
func (f *fakeStream) WriteHeaders(h *protocol.Headers, _ bool) error {
	h.Visit(func(n, v []byte) bool { f.resp.Add(n, v); return true })
	return nil
}
func (f *fakeStream) WriteData(p []byte, _ bool) error      { f.body = append(f.body, p...); return nil }
func (f *fakeStream) WriteTrailers(*protocol.Headers) error { return nil }
func (f *fakeStream) Finish(reset bool)                     { f.finished, f.reset = true, reset }
func (f *fakeStream) Protocol() string                      { return "HTTP/1.1" }

type noClusters struct{}

func (noClusters) Get(string) (*upstream.Cluster, bool) { return nil, false }
func (noClusters) Known(string) bool                    { return false }
func (noClusters) Dynamic() bool                        { return true }

// denyFilter answers 403 to requests carrying x-deny.
type denyFilter struct{ seen atomic.Int64 }

func (d *denyFilter) New() filter.StreamFilter { return d }
func (d *denyFilter) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	d.seen.Add(1)
	if h.Has("x-deny") {
		cb.SendLocalReply(403, "denied", nil)
	}
	return filter.Continue
}

const phaseRoutes = `{"virtual_hosts":[{"name":"a","domains":["a.example"],"routes":[
  {"match":{"path":"/direct"},"direct_response":{"status":200,"body":{"inline_string":"hello"}}},
  {"match":{"path":"/moved"},"redirect":{"host_redirect":"b.example","response_code":"PERMANENT_REDIRECT"}},
  {"match":{"path":"/teapot"},"route":{"cluster":"gone","cluster_not_found_response_code":"NOT_FOUND"}},
  {"match":{"prefix":"/"},"route":{"cluster":"gone"}}]}]}`

// runPhase runs one request through a connection manager built on the
// routes above and returns what the client got, and the config's stats.
func runPhase(t *testing.T, f *denyFilter, fields ...string) (*fakeStream, *Stats) {
	t.Helper()
	var rc routev3.RouteConfiguration
	if err := protojson.Unmarshal([]byte(phaseRoutes), &rc); err != nil {
		t.Fatal(err)
	}
	tb, err := router.Compile(&rc, router.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Routes: new(atomic.Pointer[router.Table]), Clusters: noClusters{}, Log: slog.New(slog.DiscardHandler),
		Stats: NewStats(stats.NewStore().Root(), "t"), Pool: network.NewPool(1), ServerName: "strait", GenerateRequestID: true}
	cfg.Routes.Store(tb)
	if f != nil {
		cfg.Filters = []HTTPFilter{{Name: "deny", Factory: f}}
	}
	cm := &connManager{cfg: cfg, conn: network.NewConn(context.Background(), fakeSocket{})}
	ds := &fakeStream{}
	for i := 0; i+1 < len(fields); i += 2 {
		ds.req.AddString(fields[i], fields[i+1])
	}
	newStream(cm, ds).run()
	if !ds.finished {
		t.Fatal("the stream was not finished")
	}
	return ds, cfg.Stats
}

func request(path string, extra ...string) []string {
	return append([]string{":method", "GET", ":scheme", "http", ":authority", "a.example", ":path", path}, extra...)
}

func TestPhaseLocalReplies(t *testing.T) {
	cases := []struct {
		name   string
		fields []string
		status string
		body   string
		stat   func(*Stats) uint64
	}{
		{"no virtual host", []string{":method", "GET", ":scheme", "http", ":authority", "z.example", ":path", "/"}, "404", "route not found\n", func(s *Stats) uint64 { return s.NoRoute.Value() }},
		{"direct response", request("/direct"), "200", "hello", func(s *Stats) uint64 { return s.DirectResponse.Value() }},
		{"redirect", request("/moved"), "308", "", func(s *Stats) uint64 { return s.Redirect.Value() }},
		{"missing cluster", request("/x"), "503", "cluster not found\n", func(s *Stats) uint64 { return s.NoCluster.Value() }},
		{"missing cluster, own code", request("/teapot"), "404", "cluster not found\n", func(s *Stats) uint64 { return s.NoCluster.Value() }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds, st := runPhase(t, nil, c.fields...)
			if got, _ := ds.resp.Get(protocol.Status); string(got) != c.status || string(ds.body) != c.body {
				t.Fatalf("got %s %q, want %s %q", got, ds.body, c.status, c.body)
			}
			if c.stat(st) != 1 {
				t.Fatal("not counted")
			}
			if st.RqCompleted.Value() != 1 || st.RqActive.Value() != 0 {
				t.Fatalf("completed %d, active %d", st.RqCompleted.Value(), st.RqActive.Value())
			}
		})
	}
	ds, _ := runPhase(t, nil, request("/moved")...)
	if loc, _ := ds.resp.Get("location"); string(loc) != "http://b.example/moved" {
		t.Fatalf("location %q", loc)
	}
}

// TestPhaseRequestHeaders: hop-by-hop fields and those Connection names
// go before routing; x-forwarded-proto and x-request-id are set.
func TestPhaseRequestHeaders(t *testing.T) {
	ds, _ := runPhase(t, nil, request("/direct", "connection", "x-hop, keep-alive", "x-hop", "1", "keep-alive", "300", "te", "gzip", "x-keep", "k")...)
	for _, gone := range []string{"connection", "x-hop", "keep-alive", "te"} {
		if ds.req.Has(gone) {
			t.Errorf("%s forwarded", gone)
		}
	}
	for _, kept := range []string{"x-keep", "x-forwarded-proto", "x-request-id"} {
		if !ds.req.Has(kept) {
			t.Errorf("%s missing", kept)
		}
	}
	if srv, _ := ds.resp.Get("server"); string(srv) != "strait" {
		t.Errorf("server %q", srv)
	}
}

// TestPhaseFilters: a stream filter runs before routing and its local
// reply ends the request.
func TestPhaseFilters(t *testing.T) {
	f := &denyFilter{}
	ds, st := runPhase(t, f, request("/direct", "x-deny", "1")...)
	if got, _ := ds.resp.Get(protocol.Status); string(got) != "403" || string(ds.body) != "denied\n" {
		t.Fatalf("got %s %q", got, ds.body)
	}
	if st.DirectResponse.Value() != 0 || f.seen.Load() != 1 {
		t.Fatal("routing ran after the filter's reply")
	}
	ds, _ = runPhase(t, f, request("/direct")...)
	if got, _ := ds.resp.Get(protocol.Status); string(got) != "200" {
		t.Fatalf("passed by the filter: %s", got)
	}
}
