package test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol/dubbo/dubbotest"
)

const anyMethod = `{ interface: "*", routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: svc } } ] }`

// TestDubboLocalReplies: each failure is answered with the Dubbo status
// a Dubbo client expects, promptly, and the connection keeps working.
func TestDubboLocalReplies(t *testing.T) {
	release := make(chan struct{})
	prov := startProvider(t, func(c *dubbotest.Call) (any, string, byte) {
		if c.Method == "slow" {
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
		}
		return dubbotest.Echo(c)
	})
	defer close(release)
	dead := closedAddr(t)
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", `
            { interface: org.example.Dead, routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: dead } } ] },
            { interface: org.example.Busy, routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: one } } ] },
            `+anyMethod, "")+`  clusters:
`+clusterOf("svc", prov.Addr)+clusterOf("dead", dead)+clusterOf("one", prov.Addr)+`    circuit_breakers: { thresholds: [ { max_requests: 1, max_pending_requests: 1 } ] }
`)
	c := dialDubbo(t, p.addr("dubbo"))
	check := func(name string, call *dubbotest.Call, status byte, within time.Duration) {
		t.Helper()
		start := time.Now()
		r, err := c.Invoke(call, 10*time.Second)
		took := time.Since(start)
		if err != nil || r.Status != status || r.Error == "" || took > within {
			t.Errorf("%s: %+v, %v after %v; want status %d with a message within %v", name, r, err, took, status, within)
		}
	}
	check("no healthy upstream", &dubbotest.Call{Service: "org.example.Dead", Method: "get"}, 70, 3*time.Second)
	check("caller's timeout", &dubbotest.Call{Service: "org.example.Echo", Method: "slow", Attachments: map[string]string{"timeout": "200"}}, 31, 2*time.Second)

	// Overload: max_requests 1 on cluster "one", a call holding it.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c2 := dialDubbo(t, p.addr("dubbo"))
		c2.Invoke(&dubbotest.Call{Service: "org.example.Busy", Method: "slow"}, 10*time.Second)
	}()
	testutil.Eventually(t, 5*time.Second, "the first call to hold the cluster", func() bool { return p.stat("cluster.one.upstream_rq_active") == 1 })
	check("overload", &dubbotest.Call{Service: "org.example.Busy", Method: "get"}, 100, 2*time.Second)
	release <- struct{}{}
	wg.Wait()

	// A body that is not hessian2: BAD_REQUEST, and the connection goes on.
	f, err := c.Roundtrip(func(id uint64) []byte {
		b := make([]byte, 16, 20)
		b[0], b[1], b[2] = 0xda, 0xbb, 0xc2
		binary.BigEndian.PutUint64(b[4:], id)
		binary.BigEndian.PutUint32(b[12:], 3)
		return append(b, 0x91, 0x92, 0x93)
	}, 5*time.Second)
	if err != nil || f.Status != 40 {
		t.Errorf("garbage body: %+v, %v; want status 40", f, err)
	}
	if r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "echo", Args: []any{"x"}}, 5*time.Second); err != nil || r.Value != "x" {
		t.Errorf("after a bad call: %+v, %v", r, err)
	}

	// A frame over the size limit: refused from its header, then closed.
	f, err = c.Roundtrip(oversizedCall, 5*time.Second)
	if err != nil || f.Status != 40 {
		t.Errorf("9 MiB frame: %+v, %v; want status 40", f, err)
	}
	if n := prov.Calls.Load(); n != 3 {
		t.Errorf("the provider saw %d calls, want 3 (two slow ones, echo)", n)
	}
	if n := p.stat("dubbo.dubbo.request_decoding_error"); n != 2 {
		t.Errorf("request_decoding_error = %d, want 2 (the garbage body, the 9 MiB frame)", n)
	}
	// Not Dubbo at all: closed without an answer.
	raw, err := net.Dial("tcp", p.addr("dubbo"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	io.WriteString(raw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := raw.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("HTTP on the Dubbo port: read %d, %v; want a close", n, err)
	}
}

// TestDubboProviderRestart: a provider killed mid-call answers its
// callers with an error at once; restarted on its address, it serves the
// same consumer connection again.
func TestDubboProviderRestart(t *testing.T) {
	hang := func(c *dubbotest.Call) (any, string, byte) {
		if c.Method == "hang" {
			time.Sleep(10 * time.Second)
		}
		return dubbotest.Echo(c)
	}
	prov, err := dubbotest.StartProvider("", hang)
	if err != nil {
		t.Fatal(err)
	}
	addr := prov.Addr
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", anyMethod, "")+`  clusters:
`+clusterOf("svc", addr))
	c := dialDubbo(t, p.addr("dubbo"))
	if r, err := c.Invoke(&dubbotest.Call{Service: "a.B", Method: "echo", Args: []any{"1"}}, 5*time.Second); err != nil || r.Value != "1" {
		t.Fatalf("before: %+v, %v", r, err)
	}
	done := make(chan error, 1)
	go func() {
		start := time.Now()
		r, err := c.Invoke(&dubbotest.Call{Service: "a.B", Method: "hang"}, 8*time.Second)
		switch {
		case err != nil:
			done <- err
		case r.Status == 20:
			done <- errors.New("the hanging call succeeded")
		case time.Since(start) > 3*time.Second:
			done <- fmt.Errorf("the error came after %v", time.Since(start))
		default:
			done <- nil
		}
	}()
	testutil.Eventually(t, 5*time.Second, "the call to reach the provider", func() bool { return prov.Calls.Load() == 2 })
	go prov.Close() // Close waits for the handler's sleep; the sockets close at once
	if err := <-done; err != nil {
		t.Errorf("provider killed mid-call: %v", err)
	}
	var again *dubbotest.Provider
	testutil.Eventually(t, 5*time.Second, "the port to be free again", func() bool {
		again, err = dubbotest.StartProvider(addr, hang)
		return err == nil
	})
	t.Cleanup(again.Close)
	testutil.Eventually(t, 10*time.Second, "calls to recover", func() bool {
		r, err := c.Invoke(&dubbotest.Call{Service: "a.B", Method: "echo", Args: []any{"2"}}, 2*time.Second)
		return err == nil && r.Value == "2"
	})
}

// TestDubboFilters: RBAC, fault injection and local rate limit run on
// Dubbo calls through the stream filter contract.
func TestDubboFilters(t *testing.T) {
	prov := startProvider(t, dubbotest.Echo)
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", anyMethod, `          dubbo_filters:
          - name: envoy.filters.http.rbac
            config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  no-deletes:
                    permissions: [ { header: { name: ":rpc-method", string_match: { prefix: delete } } } ]
                    principals: [ { any: true } ]
          - name: envoy.filters.http.fault
            config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              headers: [ { name: ":path", string_match: { prefix: /org.example.Flaky/ } } ]
              abort: { http_status: 503, percentage: { numerator: 100 } }
          - name: envoy.filters.http.local_ratelimit
            config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: dubbo_rl
              token_bucket: { max_tokens: 2, tokens_per_fill: 1, fill_interval: 3600s }
              filter_enabled: { default_value: { numerator: 100 } }
              filter_enforced: { default_value: { numerator: 100 } }
          - name: envoy.filters.dubbo.router
`)+`  clusters:
`+clusterOf("svc", prov.Addr))
	c := dialDubbo(t, p.addr("dubbo"))
	call := func(svc, method string) *dubbotest.Result {
		r, err := c.Invoke(&dubbotest.Call{Service: svc, Method: method, Args: []any{method}}, 5*time.Second)
		if err != nil {
			t.Fatalf("%s.%s: %v", svc, method, err)
		}
		return r
	}
	if r := call("org.example.Users", "get"); r.Status != 20 || r.Value != "get" {
		t.Errorf("allowed call: %+v", r)
	}
	if r := call("org.example.Users", "deleteAll"); r.Status == 20 || !strings.Contains(r.Error, "RBAC") {
		t.Errorf("denied call: %+v", r)
	}
	if r := call("org.example.Flaky", "get"); r.Status != 70 {
		t.Errorf("fault abort 503: %+v, want SERVICE_ERROR (70)", r)
	}
	// Two tokens: the first call took one (RBAC and the fault answered
	// the others before the rate limit).
	if r := call("org.example.Users", "get"); r.Status != 20 {
		t.Errorf("second allowed call: %+v", r)
	}
	if r := call("org.example.Users", "get"); r.Status != 100 {
		t.Errorf("rate limited call: %+v, want THREADPOOL_EXHAUSTED (100)", r)
	}
	if n := prov.Calls.Load(); n != 2 {
		t.Errorf("the provider saw %d calls, want 2", n)
	}
}

// TestDubboSharedPort: Dubbo, HTTP/1.1 and HTTP/2 on one listener port,
// told apart by the RPC inspector.
func TestDubboSharedPort(t *testing.T) {
	prov := startProvider(t, dubbotest.Echo)
	up := testutil.StartUpstream(t)
	p := startProxy(t, `
static_resources:
  listeners:
  - name: shared
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    listener_filters:
    - name: strait.filters.listener.rpc_inspector
      typed_config:
        "@type": type.googleapis.com/xds.type.v3.TypedStruct
        type_url: type.googleapis.com/strait.filters.listener.rpc_inspector.v1.RpcInspector
        value: { protocols: [dubbo] }
    filter_chains:
    - filter_chain_match: { application_protocols: [dubbo] }
      filters:
      - name: envoy.filters.network.dubbo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy
          stat_prefix: shared
          route_config: [ `+anyMethod+` ]
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
          route_config: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: web } } ] } ] }
  clusters:
`+clusterOf("svc", prov.Addr)+clusterOf("web", up.Addr))
	c := dialDubbo(t, p.addr("shared"))
	if r, err := c.Invoke(&dubbotest.Call{Service: "a.B", Method: "echo", Args: []any{"dubbo"}}, 5*time.Second); err != nil || r.Value != "dubbo" {
		t.Errorf("Dubbo: %+v, %v", r, err)
	}
	for name, cl := range map[string]*http.Client{"HTTP/1.1": {}, "HTTP/2.0": h2cClient()} {
		resp, err := cl.Get(p.url("shared") + "/hello")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Proto != name {
			t.Errorf("%s: %d over %s", name, resp.StatusCode, resp.Proto)
		}
	}
	if n := p.stat("rpc_inspector.dubbo_found"); n != 1 {
		t.Errorf("rpc_inspector.dubbo_found = %d", n)
	}
}

// oversizedCall is the 16-byte header of a two-way call declaring a 9 MiB
// body (over the 8 MiB default), and no body.
func oversizedCall(id uint64) []byte {
	b := make([]byte, 16)
	b[0], b[1], b[2] = 0xda, 0xbb, 0xc2
	binary.BigEndian.PutUint64(b[4:], id)
	binary.BigEndian.PutUint32(b[12:], 9<<20)
	return b
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
