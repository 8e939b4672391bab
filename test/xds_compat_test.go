package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"google.golang.org/protobuf/types/known/anypb"

	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// allModes are ADS and per-type streams, both protocols, and REST.
var allModes = append(xdsModes[:len(xdsModes):len(xdsModes)], xdsMode{"rest", false, "REST"})

// tcpListener is a tcp_proxy listener (stat prefix name) to cluster.
func tcpListener(t *testing.T, name, addr, cluster string) *listenerv3.Listener {
	host, port, _ := net.SplitHostPort(addr)
	return fromJSON(t, &listenerv3.Listener{}, `{"name":"`+name+`","address":{"socket_address":{"address":"`+host+`","port_value":`+port+`}},
	  "filter_chains":[{"filters":[{"name":"tcp","typed_config":{
	    "@type":"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
	    "stat_prefix":"`+name+`","cluster":"`+cluster+`"}}]}]}`)
}

// tcpGet sends an HTTP/1.1 request over a raw connection to addr (a
// tcp_proxy in front of an HTTP upstream) and returns the answer's body,
// or "" when the connection is closed without one.
func tcpGet(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestXDSLateClusters: listeners whose tcp_proxy and routes name clusters
// that have not arrived are accepted (Envoy resolves those names when a
// connection or request comes): the TCP listener closes connections and
// counts downstream_cx_no_route, the HTTP one answers 503 and counts
// no_cluster; once the cluster arrives, both carry traffic.
func TestXDSLateClusters(t *testing.T) {
	eachMode(t, allModes, func(t *testing.T, cp *controlPlane, boot string) {
		a := named(t, "a")
		haddr, taddr := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
		listeners := []types.Resource{testutil.XDSListener("web", haddr, "r1", ""), tcpListener(t, "raw", taddr, "late")}
		cp.set("1", map[resource.Type][]types.Resource{
			resource.ListenerType: listeners,
			resource.RouteType:    {testutil.XDSRoute("r1", "late", "")},
			resource.ClusterType:  {testutil.XDSCluster("other")}, resource.EndpointType: {testutil.XDSEndpoints("other", a)},
		})
		p := startProxy(t, boot)
		url := "http://" + haddr + "/"
		testutil.Eventually(t, 10*time.Second, "503 for the missing cluster", func() bool {
			code, _ := body(&http.Client{Timeout: 2 * time.Second}, url)
			return code == 503
		})
		if got := tcpGet(taddr); got != "" {
			t.Fatalf("tcp_proxy to a missing cluster answered %q", got)
		}
		testutil.Eventually(t, 2*time.Second, "downstream_cx_no_route", func() bool { return p.stat("tcp.raw.downstream_cx_no_route") >= 1 })
		if p.stat("http.web.no_cluster") < 1 {
			t.Fatalf("http.web.no_cluster = %d", p.stat("http.web.no_cluster"))
		}
		if n := cp.nackCount(); n != 0 {
			cp.mu.Lock()
			t.Fatalf("NACKs for listeners naming late clusters: %q", cp.nacks)
		}

		// The cluster arrives: both heal.
		cp.set("2", map[resource.Type][]types.Resource{
			resource.ListenerType: listeners,
			resource.RouteType:    {testutil.XDSRoute("r1", "late", "")},
			resource.ClusterType:  {testutil.XDSCluster("other"), testutil.XDSCluster("late")},
			resource.EndpointType: {testutil.XDSEndpoints("other", a), testutil.XDSEndpoints("late", a)},
		})
		waitBody(t, url, "a", 5*time.Second)
		testutil.Eventually(t, 2*time.Second, "tcp_proxy to the late cluster", func() bool { return tcpGet(taddr) == "a" })
	})
}

// TestXDSOneBadListener: one bad listener among five good ones: the four
// changed good ones apply, the bad one is NACKed with its name and
// reason, its old version keeps serving and the config dump shows its
// error_state; a new bad listener is not opened. A later good version
// clears the error.
func TestXDSOneBadListener(t *testing.T) {
	eachMode(t, allModes, func(t *testing.T, cp *controlPlane, boot string) {
		a, b := named(t, "a"), named(t, "b")
		var addrs []string
		for range 5 {
			addrs = append(addrs, "127.0.0.1:"+freePort(t))
		}
		newAddr := "127.0.0.1:" + freePort(t)
		clusters := []types.Resource{testutil.XDSCluster("c1"), testutil.XDSCluster("c2")}
		eps := []types.Resource{testutil.XDSEndpoints("c1", a), testutil.XDSEndpoints("c2", b)}
		routes := []types.Resource{testutil.XDSRoute("r1", "c1", ""), testutil.XDSRoute("r2", "c2", "")}
		var v1 []types.Resource
		for i, addr := range addrs {
			v1 = append(v1, testutil.XDSListener(fmt.Sprintf("l%d", i+1), addr, "r1", ""))
		}
		cp.set("1", map[resource.Type][]types.Resource{resource.ListenerType: v1, resource.RouteType: routes,
			resource.ClusterType: clusters, resource.EndpointType: eps})
		p := startProxy(t, boot)
		for _, addr := range addrs {
			waitBody(t, "http://"+addr+"/", "a", 10*time.Second)
		}

		// Version 2: l1..l4 move to r2; l5 and the new l6 are bad.
		var v2 []types.Resource
		for i, addr := range addrs[:4] {
			v2 = append(v2, testutil.XDSListener(fmt.Sprintf("l%d", i+1), addr, "r2", ""))
		}
		rest := strings.Contains(boot, "REST")
		// l5 fails validation (an empty stat_prefix); l6 names a filter
		// type Strait does not know (REST's JSON cannot carry that: there
		// it fails validation too).
		badPrefix := func(name, addr string) *listenerv3.Listener {
			l := testutil.XDSListener(name, addr, "r2", "")
			var hcm hcmv3.HttpConnectionManager
			if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
			hcm.StatPrefix = ""
			a, _ := anypb.New(&hcm)
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			return l
		}
		badType := func(name, addr string) *listenerv3.Listener {
			if rest {
				return badPrefix(name, addr)
			}
			l := testutil.XDSListener(name, addr, "r2", "")
			l.FilterChains[0].Filters[0].Name = "no-such-filter"
			l.FilterChains[0].Filters[0].GetTypedConfig().TypeUrl = "type.googleapis.com/strait.test.NoSuchFilter"
			return l
		}
		v2 = append(v2, badPrefix("l5", addrs[4]), badType("l6", newAddr))
		n := cp.nackCount()
		cp.set("2", map[resource.Type][]types.Resource{resource.ListenerType: v2, resource.RouteType: routes,
			resource.ClusterType: clusters, resource.EndpointType: eps})
		for _, addr := range addrs[:4] {
			waitBody(t, "http://"+addr+"/", "b", 5*time.Second)
		}
		var reason string
		testutil.Eventually(t, 5*time.Second, "the NACK naming l5 and l6", func() bool {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			for _, r := range cp.nacks[n:] {
				if strings.Contains(r, `listener "l5"`) && strings.Contains(r, `listener "l6"`) {
					reason = r
					return true
				}
			}
			return false
		})
		if !strings.Contains(reason, "stat_prefix") || !rest && !strings.Contains(reason, "NoSuchFilter") {
			t.Errorf("NACK %q does not say why", reason)
		}
		if code, got := body(&http.Client{Timeout: 2 * time.Second}, "http://"+addrs[4]+"/"); code != 200 || got != "a" {
			t.Fatalf("l5 after its bad update: %d %q, want its old version's a", code, got)
		}
		if c, err := net.DialTimeout("tcp", newAddr, time.Second); err == nil {
			c.Close()
			t.Fatal("the refused new listener l6 is open")
		}
		want := []string{`"errorState"`, `"name":"l5"`, `"name":"l6"`, `stat_prefix`}
		if !rest {
			want = append(want, `NoSuchFilter`)
		}
		checkDump(t, p, want)
		if p.stat("listener_manager.lds.update_rejected") == 0 {
			t.Fatal("listener_manager.lds.update_rejected not counted")
		}

		// Version 3 fixes l5 and drops l6: applied, errors cleared.
		v3 := append(v2[:4:4], testutil.XDSListener("l5", addrs[4], "r2", ""))
		cp.set("3", map[resource.Type][]types.Resource{resource.ListenerType: v3, resource.RouteType: routes,
			resource.ClusterType: clusters, resource.EndpointType: eps})
		waitBody(t, "http://"+addrs[4]+"/", "b", 5*time.Second)
		testutil.Eventually(t, 2*time.Second, "error_state cleared", func() bool {
			_, dump := get(t, p.admin()+"/config_dump")
			return !strings.Contains(dump, "errorState")
		})
	})
}

// TestXDSRenameEverything: ten versions in a row, each renaming every
// cluster and route configuration (and so changing the listener): each
// version serves right after it is pushed, and nothing is NACKed.
func TestXDSRenameEverything(t *testing.T) {
	eachMode(t, allModes, func(t *testing.T, cp *controlPlane, boot string) {
		laddr := "127.0.0.1:" + freePort(t)
		ups := []string{named(t, "u0"), named(t, "u1")}
		push := func(v int) {
			c, r := fmt.Sprintf("c%d", v), fmt.Sprintf("r%d", v)
			cp.set(fmt.Sprint(v), map[resource.Type][]types.Resource{
				resource.ListenerType: {testutil.XDSListener("ingress", laddr, r, "")},
				resource.RouteType:    {testutil.XDSRoute(r, c, "")},
				resource.ClusterType:  {testutil.XDSCluster(c)}, resource.EndpointType: {testutil.XDSEndpoints(c, ups[v%2])},
			})
		}
		push(0)
		startProxy(t, boot)
		waitBody(t, "http://"+laddr+"/", "u0", 10*time.Second)
		for v := 1; v <= 10; v++ {
			push(v)
			waitBody(t, "http://"+laddr+"/", fmt.Sprintf("u%d", v%2), 3*time.Second)
		}
		if n := cp.nackCount(); n != 0 {
			cp.mu.Lock()
			t.Fatalf("NACKs: %q", cp.nacks)
		}
	})
}
