// Package test holds the end-to-end tests: the proxy runs in-process (or
// as the built binary) on 127.0.0.1:0 in front of real loopback peers.
package test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/internal/tracelog"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/server"

	// The same extensions as the binary.
	_ "github.com/straitproxy/strait/extensions"
)

// proxy is a running in-process Strait.
type proxy struct {
	t   testing.TB
	srv *server.Server
}

// startProxy builds and starts Strait from a bootstrap YAML.
func startProxy(t testing.TB, yaml string) *proxy {
	t.Helper()
	srv, err := buildServer(yaml)
	return run(t, yaml, srv, err)
}

// run starts a built server (failing on err) and shuts it down when the
// test ends.
func run(t testing.TB, yaml string, srv *server.Server, err error) *proxy {
	t.Helper()
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Short: idle keep-alive connections would hold a graceful
		// shutdown for their drain grace (drain_timeout, 5 s).
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &proxy{t: t, srv: srv}
}

func buildServer(yaml string) (*server.Server, error) {
	var logTo io.Writer = io.Discard
	if os.Getenv("STRAIT_TEST_LOG") != "" {
		logTo = os.Stderr
	}
	return buildServerLog(yaml, slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

func buildServerLog(yaml string, log *slog.Logger) (*server.Server, error) {
	b, err := config.Parse([]byte(yaml), true)
	if err != nil {
		return nil, err
	}
	if err := config.Validate(b); err != nil {
		return nil, err
	}
	return server.New(b, server.Options{Log: log, DrainTime: 2 * time.Second, IOModel: ioModel()})
}

// startProxyTraced is startProxy logging at trace level into the
// returned buffer.
func startProxyTraced(t testing.TB, yaml string) (*proxy, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	srv, err := buildServerLog(yaml, slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: tracelog.Level, ReplaceAttr: tracelog.ReplaceAttr})))
	return run(t, yaml, srv, err), buf
}

// waitTrace waits for a trace line with want: the request line is
// written as the stream ends, which may be after its counters settle.
func waitTrace(t testing.TB, trace *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(trace.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no trace line with %q:\n%s", want, trace.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ioModel is the I/O model the suite runs under: STRAIT_IO_MODEL, else
// netpoll. make test runs the suite once per model.
func ioModel() network.IOModel {
	name := os.Getenv("STRAIT_IO_MODEL")
	if name == "" {
		name = "netpoll"
	}
	m, err := network.Model(name)
	if err != nil {
		panic(err)
	}
	return m
}

func (p *proxy) addr(listener string) string {
	a := p.srv.ListenerAddr(listener)
	if a == nil {
		p.t.Fatalf("no listener %q", listener)
	}
	return a.String()
}

func (p *proxy) url(listener string) string { return "http://" + p.addr(listener) }

func (p *proxy) admin() string { return "http://" + p.srv.AdminAddr().String() }

// stat reads a counter or gauge by its dotted name.
func (p *proxy) stat(name string) int64 {
	v, _ := p.srv.Stats().Lookup(name)
	return v
}

// settle waits until the "ingress" connection manager has no stream in
// flight: a stream's counters are final a moment after the client got its
// last byte.
func (p *proxy) settle() {
	p.t.Helper()
	testutil.Eventually(p.t, 5*time.Second, "streams to finish", func() bool {
		return p.stat("http.ingress.downstream_rq_active") == 0
	})
}

// routeCfg is the body of a route_config for httpBootstrap.
type routeCfg struct {
	routes  string // YAML list items under routes:, indented 14 spaces
	hcmOpts string // extra HCM fields, indented 10 spaces
}

// httpBootstrap is one HTTP listener "ingress" (stat prefix "ingress") in
// front of the cluster "backend" at upstream, plus admin.
func httpBootstrap(upstream string, rc routeCfg, clusterOpts string) string {
	host, port, _ := net.SplitHostPort(upstream)
	if rc.routes == "" {
		rc.routes = `              - match: { prefix: "/" }
                route: { cluster: backend }`
	}
	return fmt.Sprintf(`
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
%s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
%s
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: backend
    connect_timeout: 1s
%s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: %s, port_value: %s } } }
`, rc.hcmOpts, rc.routes, clusterOpts, host, port)
}

// serveHTTP runs handler on a loopback HTTP/1.1 server (also HTTP/2 with
// prior knowledge when h2c is set), closed by t.Cleanup; it returns the
// server's address.
func serveHTTP(t testing.TB, handler http.HandlerFunc, h2c bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	if h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// get fetches url with a fresh client and returns status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// rawExchange writes req on a new connection and reads until the proxy
// closes it (or 3 s pass); it returns everything read and whether the
// connection was closed by the proxy.
func rawExchange(t testing.TB, addr, req string) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	var sb strings.Builder
	_, err = io.Copy(&sb, c)
	closed := err == nil
	return sb.String(), closed
}
