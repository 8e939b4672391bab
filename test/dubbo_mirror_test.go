package test

import (
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol/dubbo/dubbotest"
)

// mirrorFilter is a strait.filters.dubbo.mirror entry of dubbo_filters.
func mirrorFilter(value string) string {
	return `          - name: strait.filters.dubbo.mirror
            config:
              "@type": type.googleapis.com/xds.type.v3.TypedStruct
              type_url: type.googleapis.com/strait.filters.dubbo.mirror.v1.Mirror
              value: ` + value + `
          - name: envoy.filters.dubbo.router
`
}

// hungProvider accepts Dubbo connections, reads everything and never
// answers.
func hungProvider(t *testing.T) string {
	return testutil.StartTCP(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(io.Discard, c)
	})
}

// TestDubboMirror: calls matched by a mirrored route configuration are
// copied to the shadow cluster (the same method and arguments, an id of
// their own), others are not, and a shadow that never answers costs the
// primary nothing.
func TestDubboMirror(t *testing.T) {
	prov := startProvider(t, dubbotest.Echo)
	var mu sync.Mutex
	var seen []string
	shadow := startProvider(t, func(c *dubbotest.Call) (any, string, byte) {
		mu.Lock()
		seen = append(seen, c.Service+"."+c.Method+"("+fmt.Sprint(c.Args...)+")")
		mu.Unlock()
		return "from the shadow", "", 0
	})
	hung := hungProvider(t)
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", `
            { name: orders, interface: org.example.Orders, routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: svc } } ] },
            { name: rest, interface: "*", routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: svc } } ] }`,
		`          dubbo_filters:
`+mirrorFilter(`{ route_configs: [ orders ], request_mirror_policies: [ { cluster: shadow }, { cluster: hung } ] }`))+`  clusters:
`+clusterOf("svc", prov.Addr)+clusterOf("shadow", shadow.Addr)+clusterOf("hung", hung))
	c := dialDubbo(t, p.addr("dubbo"))
	const n = 20
	var want []string
	start := time.Now()
	for i := range n {
		arg := fmt.Sprintf("order-%d", i)
		r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Orders", Method: "get", Args: []any{arg}}, 5*time.Second)
		if err != nil || r.Status != 20 || r.Value != arg {
			t.Fatalf("call %d: %+v, %v; want the primary's answer", i, r, err)
		}
		want = append(want, "org.example.Orders.get("+arg+")")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("%d calls took %v with a hung shadow", n, took)
	}
	if r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Users", Method: "get", Args: []any{"u"}}, 5*time.Second); err != nil || r.Value != "u" {
		t.Fatalf("unmirrored call: %+v, %v", r, err)
	}
	testutil.Eventually(t, 5*time.Second, "the shadow to see every mirrored call", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= n
	})
	time.Sleep(100 * time.Millisecond) // a stray copy of the unmirrored call would show by now
	mu.Lock()
	got := append([]string(nil), seen...)
	mu.Unlock()
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the shadow saw %v\nwant %v", got, want)
	}
	if v := p.stat("dubbo.dubbo.rq_mirror_total"); v != 2*n {
		t.Errorf("rq_mirror_total = %d, want %d", v, 2*n)
	}
	if v := prov.Calls.Load(); v != n+1 {
		t.Errorf("the primary saw %d calls, want %d", v, n+1)
	}
}

// TestDubboMirrorConfigRefused: the mirror entry's mistakes are named.
func TestDubboMirrorConfigRefused(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{`{ route_configs: [ nope ], request_mirror_policies: [ { cluster: svc } ] }`, `value.route_configs[0]: no route configuration is named "nope"`},
		{`{ request_mirror_policies: [ { cluster: svc, bogus: 1 } ] }`, "value.request_mirror_policies[0]"},
		{`{ request_mirror_policies: [] }`, "at least one policy"},
		{`{ request_mirror_policies: [ { cluster: missing } ] }`, `cluster "missing"`},
		{`{ policies: [ { cluster: svc } ] }`, "policies"},
	} {
		_, err := buildServer("static_resources:\n  listeners:\n" + dubboListener("dubbo", `{ name: orders, interface: "*", routes: [ { match: { method: { name: { exact: get } } }, route: { cluster: svc } } ] }`,
			"          dubbo_filters:\n"+mirrorFilter(tc.value)) + "  clusters:\n" + clusterOf("svc", "127.0.0.1:1"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error with %q", tc.value, err, tc.want)
		}
	}
}
