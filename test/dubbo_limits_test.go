package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol/dubbo/dubbotest"
)

// TestDubboBodyLimits: a listener's and a cluster's rpc_max_body_bytes
// bound calls and replies. A call over the listener's limit is refused
// from its header; a reply over the cluster's fails its own call and the
// shared upstream connection goes on carrying the others.
func TestDubboBodyLimits(t *testing.T) {
	prov := startProvider(t, func(c *dubbotest.Call) (any, string, byte) {
		if c.Method == "big" {
			return strings.Repeat("r", 6000), "", 0
		}
		return dubbotest.Echo(c)
	})
	p := startProxy(t, `
static_resources:
  listeners:
`+strings.Replace(dubboListener("dubbo", anyMethod, ""), "    filter_chains:",
		"    metadata: { filter_metadata: { strait: { rpc_max_body_bytes: 4096 } } }\n    filter_chains:", 1)+`  clusters:
`+clusterOf("svc", prov.Addr)+`    metadata: { filter_metadata: { strait: { rpc_max_body_bytes: 5000 }, istio: { anything: goes } } }
`)
	c := dialDubbo(t, p.addr("dubbo"))
	echo := func(n int) (*dubbotest.Result, error) {
		return c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "echo", Args: []any{strings.Repeat("a", n)}}, 5*time.Second)
	}
	if r, err := echo(3000); err != nil || r.Status != 20 || r.Value != strings.Repeat("a", 3000) {
		t.Fatalf("3000-byte call under both limits: %+v, %v", r, err)
	}
	// The reply (about 6 KB) is over the cluster's limit: this call fails,
	// promptly, and the next call on the same upstream connection works.
	start := time.Now()
	r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "big"}, 5*time.Second)
	if err != nil || r.Status != 70 || time.Since(start) > 2*time.Second {
		t.Errorf("reply over the cluster's limit: status %d, %q (%d-byte value), %v after %v; want SERVICE_ERROR (70) at once", r.Status, r.Error, len(fmt.Sprint(r.Value)), err, time.Since(start))
	}
	if r, err := echo(10); err != nil || r.Status != 20 {
		t.Errorf("call after an oversized reply: %+v, %v", r, err)
	}
	if n := p.stat("cluster.svc.upstream_cx_total"); n != 1 {
		t.Errorf("upstream_cx_total = %d: the oversized reply cost the shared connection", n)
	}
	// A call over the listener's limit never reaches the provider.
	calls := prov.Calls.Load()
	if r, err := echo(5000); err != nil || r.Status != 40 {
		t.Errorf("5000-byte call over the listener's 4096: %+v, %v; want status 40", r, err)
	}
	if n := prov.Calls.Load(); n != calls {
		t.Errorf("the provider saw the refused call")
	}
}

// TestDubboUpstreamHeartbeat: an idle upstream connection sends
// heartbeats at the cluster's rpc_heartbeat_interval, and a provider that
// stops answering (hung, or a half-open connection) is detected by them:
// its call in flight fails within two intervals instead of waiting out
// the route's 15 s.
func TestDubboUpstreamHeartbeat(t *testing.T) {
	prov := startProvider(t, dubbotest.Echo)
	hung := hungProvider(t)
	beat := "    metadata: { filter_metadata: { strait: { rpc_heartbeat_interval: 0.2s } } }\n"
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", `
            { interface: org.example.Hung, routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: hung } } ] },
            `+anyMethod, "")+`  clusters:
`+clusterOf("svc", prov.Addr)+beat+clusterOf("hung", hung)+beat)
	c := dialDubbo(t, p.addr("dubbo"))
	if r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "echo", Args: []any{"x"}}, 5*time.Second); err != nil || r.Value != "x" {
		t.Fatalf("echo: %+v, %v", r, err)
	}
	testutil.Eventually(t, 5*time.Second, "heartbeats on the idle upstream connection", func() bool { return prov.Pings.Load() >= 2 })

	start := time.Now()
	r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Hung", Method: "get"}, 10*time.Second)
	took := time.Since(start)
	if err != nil || r.Status != 70 || took > 3*time.Second {
		t.Errorf("call to a hung provider: %+v, %v after %v; want SERVICE_ERROR (70) within about two heartbeat intervals", r, err, took)
	}
	if r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "echo", Args: []any{"y"}}, 5*time.Second); err != nil || r.Value != "y" {
		t.Errorf("echo after: %+v, %v", r, err)
	}
}

// TestDubboLimitConfigRefused: the strait metadata keys are checked, and
// named when wrong.
func TestDubboLimitConfigRefused(t *testing.T) {
	for _, tc := range []struct{ where, md, want string }{
		{"listener", `rpc_max_body_bytes: 12`, "metadata.filter_metadata.strait.rpc_max_body_bytes"},
		{"listener", `rpc_max_body_bytes: "8MiB"`, "metadata.filter_metadata.strait.rpc_max_body_bytes"},
		{"listener", `rpc_heartbeat_interval: 1s`, "metadata.filter_metadata.strait.rpc_heartbeat_interval: unknown key"},
		{"cluster", `rpc_max_body_bytes: 1.5e20`, "metadata.filter_metadata.strait.rpc_max_body_bytes"},
		{"cluster", `rpc_heartbeat_interval: 5`, "metadata.filter_metadata.strait.rpc_heartbeat_interval"},
		{"cluster", `rpc_heartbeat_interval: 1ms`, "at least 100ms"},
		{"cluster", `rpc_max_bytes: 4096`, "metadata.filter_metadata.strait.rpc_max_bytes: unknown key"},
	} {
		md := "    metadata: { filter_metadata: { strait: { " + tc.md + " } } }\n"
		l := dubboListener("dubbo", anyMethod, "")
		cl := clusterOf("svc", "127.0.0.1:1")
		if tc.where == "listener" {
			l = strings.Replace(l, "    filter_chains:", md+"    filter_chains:", 1)
		} else {
			cl += md
		}
		_, err := buildServer("static_resources:\n  listeners:\n" + l + "  clusters:\n" + cl)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v; want an error with %q", tc.where, tc.md, err, tc.want)
		}
	}
}

// TestDubboRefusedFrameAnswersCallsInFlight: a connection that refuses
// an oversized frame still answers the calls it took before it, then
// closes.
func TestDubboRefusedFrameAnswersCallsInFlight(t *testing.T) {
	release := make(chan struct{})
	prov := startProvider(t, func(c *dubbotest.Call) (any, string, byte) {
		if c.Method == "slow" {
			<-release
		}
		return dubbotest.Echo(c)
	})
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", anyMethod, "")+`  clusters:
`+clusterOf("svc", prov.Addr))
	c := dialDubbo(t, p.addr("dubbo"))
	slow := make(chan *dubbotest.Result, 1)
	go func() {
		r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "slow", Args: []any{"in flight"}}, 5*time.Second)
		if err != nil {
			r = &dubbotest.Result{Error: err.Error()}
		}
		slow <- r
	}()
	testutil.Eventually(t, 5*time.Second, "the slow call to reach the provider", func() bool { return prov.Calls.Load() == 1 })
	f, err := c.Roundtrip(oversizedCall, 5*time.Second)
	if err != nil || f.Status != 40 {
		t.Fatalf("oversized frame: %+v, %v; want status 40", f, err)
	}
	close(release)
	if r := <-slow; r.Status != 20 || r.Value != "in flight" {
		t.Errorf("the call in flight before the refused frame: %+v", r)
	}
}
