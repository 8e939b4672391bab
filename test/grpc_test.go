package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// grpcInteropCases are the grpc-go interop cases the proxy must carry
// (issue 4); pick_first_unary and the ORCA cases fail without a proxy too.
var grpcInteropCases = []string{
	"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong",
	"empty_stream", "timeout_on_sleeping_server", "cancel_after_begin",
	"cancel_after_first_response", "custom_metadata", "status_code_and_message",
	"special_status_message", "unimplemented_method", "unimplemented_service",
}

// TestGRPCInterop runs grpc-go's interop client through the proxy (an
// AUTO listener) to grpc-go's interop server (an HTTP/2 cluster).
func TestGRPCInterop(t *testing.T) {
	addr := startInteropServer(t)
	p := startProxy(t, httpBootstrap(addr, routeCfg{}, h2Upstream))
	runInterop(t, p.addr("ingress"), "--use_tls=false")
}

// TestGRPCInteropTLS: the same cases over TLS on both hops: the client
// checks Strait's certificate and negotiates h2 by ALPN; Strait checks
// the interop server's against the CA and offers h2 upstream.
func TestGRPCInteropTLS(t *testing.T) {
	pki := newPKI(t)
	scert, skey := pki.issue(t, "interop-server", false, "backend.example")
	pcert, pkey := pki.issue(t, "strait", false, "localhost")
	addr := startInteropServer(t, "--use_tls", "--tls_cert_file", scert, "--tls_key_file", skey)
	y := tlsBootstrap(addr, `          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [ { certificate_chain: { filename: `+pcert+` }, private_key: { filename: `+pkey+` } } ]`)
	y = strings.Replace(y, "    connect_timeout: 1s\n", "    connect_timeout: 1s\n"+h2Upstream+`
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.example
        common_tls_context:
          validation_context:
            trusted_ca: { filename: `+pki.caFile+` }
            match_typed_subject_alt_names: [ { san_type: DNS, matcher: { exact: backend.example } } ]
`, 1)
	p := startProxy(t, y)
	runInterop(t, p.addr("ingress"), "--use_tls=true", "--use_test_ca", "--ca_file", pki.caFile, "--server_host_override", "localhost")
	if got := p.stat("http.ingress.downstream_cx_http2_total"); got == 0 {
		t.Error("the client's connections did not reach the HTTP/2 codec")
	}
}

// startInteropServer runs grpc-go's interop server with args and returns
// its address.
func startInteropServer(t *testing.T, args ...string) string {
	server := tool(t, "grpc-interop-server")
	port := freePort(t)
	srv := exec.Command(server, append([]string{"--port", port}, args...)...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	addr := "127.0.0.1:" + port
	testutil.Eventually(t, 10*time.Second, "interop server to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// runInterop runs the interop client's cases against addr.
func runInterop(t *testing.T, addr string, args ...string) {
	client := tool(t, "grpc-interop-client")
	host, port, _ := net.SplitHostPort(addr)
	for _, tc := range grpcInteropCases {
		t.Run(tc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, client, append([]string{"--server_host", host, "--server_port", port, "--test_case", tc}, args...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc, err, out)
			}
		})
	}
}

// grpcCall posts an empty gRPC message and returns the response with its
// body read (trailers filled in).
func grpcCall(t *testing.T, url string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("content-type", "application/grpc")
	req.Header.Set("te", "trailers")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// grpcStatus is the call's grpc-status, from the headers of a
// trailers-only answer or from the trailers.
func grpcStatus(r *http.Response) string {
	if s := r.Header.Get("grpc-status"); s != "" {
		return s
	}
	return r.Trailer.Get("grpc-status")
}

func deadPort(t *testing.T) string {
	_, port, _ := net.SplitHostPort(closedPort(t))
	return port
}

// TestGRPCLocalRepliesAndTimeout: the proxy's own answers to gRPC calls
// are gRPC statuses, and grpc-timeout caps the route timeout.
func TestGRPCLocalRepliesAndTimeout(t *testing.T) {
	up := testutil.StartUpstreamH2C(t)
	routes := `              - match: { prefix: "/dead" }
                route: { cluster: dead }
              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 10s }`
	yaml := httpBootstrap(up.Addr, routeCfg{routes: routes}, h2Upstream) + fmt.Sprintf(`
  - name: dead
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %s } } }
`, deadPort(t))
	p := startProxy(t, yaml)
	base := p.url("ingress")

	r := grpcCall(t, base+"/dead/x", nil)
	if r.StatusCode != 200 || grpcStatus(r) != "14" || r.Header.Get("grpc-message") == "" {
		t.Fatalf("connect failure: %d grpc-status %q message %q", r.StatusCode, grpcStatus(r), r.Header.Get("grpc-message"))
	}

	start := time.Now()
	r = grpcCall(t, base+"/slow/3000", map[string]string{"grpc-timeout": "200m"})
	if took := time.Since(start); grpcStatus(r) != "4" || took > 2*time.Second {
		t.Fatalf("grpc-timeout 200m: grpc-status %q after %v (route timeout is 10s)", grpcStatus(r), took)
	}

	r = grpcCall(t, base+"/trailers", nil)
	if r.StatusCode != 200 || grpcStatus(r) != "0" {
		t.Fatalf("passed-through call: %d grpc-status %q", r.StatusCode, grpcStatus(r))
	}
}

// TestGRPCRetryOnStatus retries a trailers-only UNAVAILABLE answer under
// retry_on: unavailable.
func TestGRPCRetryOnStatus(t *testing.T) {
	var calls atomic.Int32
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "application/grpc")
		if calls.Add(1) == 1 {
			w.Header().Set("grpc-status", "14")
			w.WriteHeader(200)
			return
		}
		w.Header().Set("Trailer", "grpc-status")
		w.WriteHeader(200)
		w.Write([]byte("\x00\x00\x00\x00\x00"))
		w.Header().Set("grpc-status", "0")
	}, true)
	routes := `              - match: { prefix: "/" }
                route:
                  cluster: backend
                  retry_policy: { retry_on: "unavailable", num_retries: 2 }`
	p := startProxy(t, httpBootstrap(addr, routeCfg{routes: routes}, h2Upstream))
	r := grpcCall(t, p.url("ingress")+"/svc/Method", nil)
	if grpcStatus(r) != "0" || calls.Load() != 2 {
		t.Fatalf("grpc-status %q after %d calls, want 0 after 2", grpcStatus(r), calls.Load())
	}
}

// TestGRPCMaxTimeout: max_grpc_timeout (what Istio sends, 0s) makes a
// gRPC call's grpc-timeout its timeout instead of the route's (none
// without the header); a non-zero one caps it (a header of 0, "none",
// too) and grpc_timeout_offset shortens it; the upstream is sent the
// timeout applied. An offset alone is refused. max_stream_duration's
// grpc_timeout_header_max caps a call the same way, from the stream's
// start: DEADLINE_EXCEEDED.
func TestGRPCMaxTimeout(t *testing.T) {
	up := testutil.StartUpstreamH2C(t)
	routes := `              - match: { prefix: "/uncapped/" }
                route: { cluster: backend, timeout: 0.3s, max_grpc_timeout: 0s, prefix_rewrite: "/" }
              - match: { prefix: "/capped/" }
                route: { cluster: backend, timeout: 10s, max_grpc_timeout: 0.3s, prefix_rewrite: "/" }
              - match: { prefix: "/offset/" }
                route: { cluster: backend, max_grpc_timeout: 0s, grpc_timeout_offset: 3.5s, prefix_rewrite: "/" }
              - match: { prefix: "/msd/" }
                route: { cluster: backend, max_stream_duration: { grpc_timeout_header_max: 0.3s }, prefix_rewrite: "/" }`
	y := httpBootstrap(up.Addr, routeCfg{routes: routes}, h2Upstream)
	p := startProxy(t, y)
	base := p.url("ingress")
	call := func(path, timeout string) (string, time.Duration) {
		h := map[string]string{}
		if timeout != "" {
			h["grpc-timeout"] = timeout
		}
		start := time.Now()
		r := grpcCall(t, base+path, h)
		return grpcStatus(r), time.Since(start)
	}
	if st, took := call("/uncapped/slow/800", ""); st == "4" || took < 700*time.Millisecond {
		t.Errorf("max_grpc_timeout 0s, no grpc-timeout: grpc-status %q after %v; the route's 0.3s must not apply", st, took)
	}
	if st, took := call("/uncapped/slow/3000", "200m"); st != "4" || took > 2*time.Second {
		t.Errorf("max_grpc_timeout 0s, grpc-timeout 200m: grpc-status %q after %v", st, took)
	}
	for _, h := range []string{"", "5S", "0m"} {
		if st, took := call("/capped/slow/3000", h); st != "4" || took > 2*time.Second {
			t.Errorf("capped, grpc-timeout %q: grpc-status %q after %v; want DEADLINE_EXCEEDED at the 0.3s cap", h, st, took)
		}
	}
	if st, took := call("/offset/slow/5000", "4S"); st != "4" || took > 3*time.Second {
		t.Errorf("grpc_timeout_offset 3.5s, grpc-timeout 4S: grpc-status %q after %v; want 0.5s", st, took)
	}
	bad := strings.Replace(y, "max_grpc_timeout: 0s, grpc_timeout_offset", "grpc_timeout_offset", 1)
	if _, err := buildServer(bad); err == nil || !strings.Contains(err.Error(), "grpc_timeout_offset") {
		t.Errorf("an offset without max_grpc_timeout: %v", err)
	}
	if st, took := call("/msd/slow/3000", "5S"); st != "4" || took > 2*time.Second {
		t.Errorf("max_stream_duration grpc_timeout_header_max 0.3s, grpc-timeout 5S: grpc-status %q after %v; want DEADLINE_EXCEEDED at 0.3s", st, took)
	}

	// What the upstream is told.
	seen := make(chan string, 4)
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("grpc-timeout")
		w.Header().Set("content-type", "application/grpc")
		w.Header().Set("grpc-status", "0")
	}, true)
	p = startProxy(t, httpBootstrap(addr, routeCfg{routes: `              - match: { prefix: "/pertry/" }
                route: { cluster: backend, max_grpc_timeout: 0.3s, retry_policy: { retry_on: 5xx, per_try_timeout: 0.05s } }
              - match: { prefix: "/" }
                route: { cluster: backend, max_grpc_timeout: 0.3s, grpc_timeout_offset: 0.1s }`}, h2Upstream))
	base = p.url("ingress")
	for _, tc := range []struct {
		path, header string
		wantMs       int // what is left when the attempt starts: a little less
	}{{"/svc/M", "", 300}, {"/svc/M", "5S", 300}, {"/svc/M", "250m", 150}, {"/pertry/M", "5S", 50}} {
		call(tc.path, tc.header)
		got := <-seen
		ms, err := strconv.Atoi(strings.TrimSuffix(got, "m"))
		if err != nil || !strings.HasSuffix(got, "m") || ms > tc.wantMs || ms < tc.wantMs-100 {
			t.Errorf("%s, grpc-timeout %q: the upstream was sent %q, want about %dm", tc.path, tc.header, got, tc.wantMs)
		}
	}
}
