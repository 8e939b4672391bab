package test

import (
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol/dubbo/dubbotest"
)

// dubboListener is a listener named name with a dubbo_proxy whose
// multiple_route_config holds routeConfigs (a YAML flow sequence's inside).
func dubboListener(name, routeConfigs, filters string) string {
	return `  - name: ` + name + `
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.dubbo_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy
          stat_prefix: ` + name + `
          multiple_route_config: { name: local, route_config: [ ` + routeConfigs + ` ] }
` + filters
}

// clusterOf is a static cluster with several endpoints.
func clusterOf(name string, addrs ...string) string {
	var eps []string
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		eps = append(eps, fmt.Sprintf("{ endpoint: { address: { socket_address: { address: %s, port_value: %s } } } }", host, port))
	}
	return fmt.Sprintf(`  - name: %s
    connect_timeout: 1s
    load_assignment:
      cluster_name: %s
      endpoints: [ { lb_endpoints: [ %s ] } ]
`, name, name, strings.Join(eps, ", "))
}

func startProvider(t *testing.T, h dubbotest.Handler) *dubbotest.Provider {
	t.Helper()
	p, err := dubbotest.StartProvider("", h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func dialDubbo(t *testing.T, addr string) *dubbotest.Client {
	t.Helper()
	c, err := dubbotest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDubboRouting: calls are routed by interface (exact and wildcard),
// group, version, method and argument, and answered intact; calls no
// route takes get SERVICE_NOT_FOUND.
func TestDubboRouting(t *testing.T) {
	tag := func(name string) dubbotest.Handler {
		return func(c *dubbotest.Call) (any, string, byte) {
			return name + ":" + c.Method, "", 0
		}
	}
	a := startProvider(t, tag("a"))
	b := startProvider(t, tag("b"))
	blue := startProvider(t, tag("blue"))
	wild := startProvider(t, tag("wild"))
	vip := startProvider(t, tag("vip"))
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", `
            { interface: org.example.Users, group: blue, routes: [ { match: { method: { name: { exact: get } } }, route: { cluster: blue } } ] },
            { interface: org.example.Users, version: "2.0", routes: [
                { match: { method: { name: { exact: get }, params_match: { 0: { exact_match: vip } } } }, route: { cluster: vip } },
                { match: { method: { name: { prefix: ge } } }, route: { cluster: b } } ] },
            { interface: org.example.Users, routes: [ { match: { method: { name: { safe_regex: { regex: "get|put" } } } }, route: { cluster: a } } ] },
            { interface: "*.Orders", routes: [ { match: { method: { name: { exact: list } } }, route: { cluster: wild } } ] }`, "")+`  clusters:
`+clusterOf("a", a.Addr)+clusterOf("b", b.Addr)+clusterOf("blue", blue.Addr)+clusterOf("wild", wild.Addr)+clusterOf("vip", vip.Addr))
	c := dialDubbo(t, p.addr("dubbo"))
	for _, tc := range []struct {
		call dubbotest.Call
		want string
	}{
		{dubbotest.Call{Service: "org.example.Users", Method: "get", Args: []any{"x"}}, "a:get"},
		{dubbotest.Call{Service: "org.example.Users", Method: "put", Args: []any{"x"}}, "a:put"},
		{dubbotest.Call{Service: "org.example.Users", Method: "get", Attachments: map[string]string{"group": "blue"}}, "blue:get"},
		{dubbotest.Call{Service: "org.example.Users", Version: "2.0", Method: "get", Args: []any{"x"}}, "b:get"},
		{dubbotest.Call{Service: "org.example.Users", Version: "2.0", Method: "get", Args: []any{"vip"}}, "vip:get"},
		{dubbotest.Call{Service: "org.example.Users", Version: "2.0", Method: "gets"}, "b:gets"},
		{dubbotest.Call{Service: "com.shop.Orders", Method: "list"}, "wild:list"},
	} {
		r, err := c.Invoke(&tc.call, 5*time.Second)
		if err != nil {
			t.Fatalf("%+v: %v", tc.call, err)
		}
		if r.Status != 20 || r.Value != tc.want {
			t.Errorf("%s.%s (v%q, %v): %+v, want %q", tc.call.Service, tc.call.Method, tc.call.Version, tc.call.Attachments, r, tc.want)
		}
	}
	for _, call := range []dubbotest.Call{
		{Service: "org.example.Users", Method: "delete"},
		{Service: ".Orders", Method: "list"}, // the wildcard matches no empty name
		{Service: "org.example.Other", Method: "get"},
	} {
		r, err := c.Invoke(&call, 5*time.Second)
		if err != nil || r.Status != 60 || r.Error == "" {
			t.Errorf("%s.%s: %+v, %v; want SERVICE_NOT_FOUND (60) with a message", call.Service, call.Method, r, err)
		}
	}
	if n := p.stat("dubbo.dubbo.no_route"); n != 3 {
		t.Errorf("no_route = %d, want 3", n)
	}
}

// TestDubboPayloads: strings, ints, lists, maps, nested objects and a
// 1 MiB argument come back as sent; provider exceptions and error
// statuses reach the consumer intact; one-way calls reach the provider.
func TestDubboPayloads(t *testing.T) {
	prov := startProvider(t, func(c *dubbotest.Call) (any, string, byte) {
		switch c.Method {
		case "fail":
			return nil, "java.lang.IllegalStateException: boom", 0
		case "busy":
			return nil, "provider thread pool is exhausted", 100
		}
		return dubbotest.Echo(c)
	})
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", `{ interface: "*", routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: svc } } ] }`, "")+`  clusters:
`+clusterOf("svc", prov.Addr))
	c := dialDubbo(t, p.addr("dubbo"))
	big := strings.Repeat("0123456789abcdef", 1<<16)
	for _, arg := range []any{"hello", int32(42), int64(1) << 40, true, []any{"a", int32(1), []any{"nested"}},
		map[any]any{"k": "v", "n": map[any]any{"deep": []any{int32(7)}}}, big} {
		r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "echo", Args: []any{arg}}, 10*time.Second)
		if err != nil {
			t.Fatalf("%T: %v", arg, err)
		}
		if r.Status != 20 || !reflect.DeepEqual(r.Value, arg) {
			t.Errorf("%T: got %.60v (status %d), want %.60v", arg, r.Value, r.Status, arg)
		}
	}
	r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "fail"}, 5*time.Second)
	if err != nil || r.Status != 20 || r.Exception != "java.lang.IllegalStateException: boom" {
		t.Errorf("exception: %+v, %v", r, err)
	}
	r, err = c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "busy"}, 5*time.Second)
	if err != nil || r.Status != 100 || r.Error != "provider thread pool is exhausted" {
		t.Errorf("provider's error status: %+v, %v", r, err)
	}
	before := prov.Calls.Load()
	f, _ := dubbotest.EncodeRequest(999, &dubbotest.Call{Service: "org.example.Echo", Method: "note", Args: []any{"x"}, OneWay: true})
	if err := c.Send(f); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the one-way call to arrive", func() bool { return prov.Calls.Load() == before+1 })
	// The connection still works after the one-way call (nothing answered it).
	if r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "echo", Args: []any{"after"}}, 5*time.Second); err != nil || r.Value != "after" {
		t.Errorf("after a one-way call: %+v, %v", r, err)
	}
	if err := c.Ping(5 * time.Second); err != nil {
		t.Errorf("heartbeat: %v", err)
	}
	// Envoy's dubbo_proxy counters, and the same per service and method.
	testutil.Eventually(t, 5*time.Second, "calls to finish", func() bool { return p.stat("dubbo.dubbo.downstream_rq_active") == 0 })
	// The heartbeat is counted after its answer is written.
	testutil.Eventually(t, 5*time.Second, "the heartbeat to be counted", func() bool { return p.stat("dubbo.dubbo.request_event") == 1 })
	m := "dubbo.dubbo.service.org.example.Echo.method."
	for name, want := range map[string]int64{
		"dubbo.dubbo.request": 11, "dubbo.dubbo.request_oneway": 1, "dubbo.dubbo.request_twoway": 10,
		"dubbo.dubbo.response_success": 9, "dubbo.dubbo.response_business_exception": 1, "dubbo.dubbo.response_error": 1,
		m + "echo.request": 8, m + "echo.response_success": 8, m + "echo.response_error": 0,
		m + "fail.request": 1, m + "fail.response_business_exception": 1, m + "fail.response_success": 0,
		m + "busy.response_error": 1, m + "note.request": 1,
		"dubbo.dubbo.request_event": 1, "dubbo.dubbo.request_decoding_success": 11, "dubbo.dubbo.request_decoding_error": 0,
	} {
		if got := p.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	var prom strings.Builder
	if err := p.srv.Stats().WritePrometheus(&prom); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`envoy_dubbo_service_method_request{envoy_dubbo_prefix="dubbo",dubbo_service="org.example.Echo",dubbo_method="echo"} 8`,
		`envoy_dubbo_service_method_request_time_count{envoy_dubbo_prefix="dubbo",dubbo_service="org.example.Echo",dubbo_method="echo"} 8`,
	} {
		if !strings.Contains(prom.String(), want) {
			t.Errorf("/stats/prometheus lacks %s", want)
		}
	}
}

// TestDubboMultiplexing: 1,000 concurrent calls from 50 consumer
// connections share 2 upstream connections; every answer matches its
// call.
func TestDubboMultiplexing(t *testing.T) {
	prov := startProvider(t, func(c *dubbotest.Call) (any, string, byte) {
		time.Sleep(time.Duration(len(c.Args[0].(string))%7) * time.Millisecond)
		return dubbotest.Echo(c)
	})
	// Two endpoints on the same provider: one upstream connection each.
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", `{ interface: "*", routes: [ { match: { method: { name: { exact: echo } } }, route: { cluster: svc } } ] }`, "")+`  clusters:
`+clusterOf("svc", prov.Addr, prov.Addr))
	clients := make([]*dubbotest.Client, 50)
	for i := range clients {
		clients[i] = dialDubbo(t, p.addr("dubbo"))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := fmt.Sprintf("call-%d-%s", i, strings.Repeat("x", i%13))
			r, err := clients[i%50].Invoke(&dubbotest.Call{Service: "org.example.Echo", Method: "echo", Args: []any{want}}, 10*time.Second)
			switch {
			case err != nil:
				errs <- fmt.Errorf("call %d: %v", i, err)
			case r.Value != want:
				errs <- fmt.Errorf("call %d got %v", i, r.Value)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := prov.Accepted.Load(); n != 2 {
		t.Errorf("the provider accepted %d connections, want 2", n)
	}
	if n := prov.Calls.Load(); n != 1000 {
		t.Errorf("the provider saw %d calls, want 1000", n)
	}
}
