package test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"google.golang.org/protobuf/encoding/protojson"
)

// vhdsListener is an HTTP listener with the on_demand filter whose route
// configuration "vr" comes by RDS from src (JSON); request_timeout bounds
// an on-demand wait.
func vhdsListener(t *testing.T, addr, src string) *listenerv3.Listener {
	host, port, _ := net.SplitHostPort(addr)
	return fromJSON(t, &listenerv3.Listener{}, `{"name":"vhds","address":{"socket_address":{"address":"`+host+`","port_value":`+port+`}},
	  "filter_chains":[{"filters":[{"name":"hcm","typed_config":{
	    "@type":"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	    "stat_prefix":"vhds","request_timeout":"1s",
	    "rds":{"route_config_name":"vr","config_source":`+src+`},
	    "http_filters":[
	      {"name":"envoy.filters.http.on_demand","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.http.on_demand.v3.OnDemand"}},
	      {"name":"envoy.filters.http.router","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}`)
}

// vhost is a virtual host named name for domain, routing to cluster.
func vhost(t *testing.T, name, domain, cluster string) *routev3.VirtualHost {
	return fromJSON(t, &routev3.VirtualHost{}, `{"name":"`+name+`","domains":["`+domain+`"],"routes":[{"match":{"prefix":"/"},"route":{"cluster":"`+cluster+`"}}]}`)
}

// hostGet asks url with the Host header host.
func hostGet(url, host string) (int, string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	buf := make([]byte, 256)
	n, _ := resp.Body.Read(buf)
	return resp.StatusCode, string(buf[:n])
}

// TestVHDS: a route configuration with vhds takes the virtual hosts the
// server sends for its name (go-control-plane answers the exact name
// "vr"); a request for a host none matches waits while
// "vr/<host>" is asked for on demand and is routed once it arrives; a
// host the server does not know gets 404 after the request timeout; a
// changed virtual host applies; one that cannot compile is refused by
// name and the rest keep serving. Over state-of-the-world xDS the route
// configuration is refused: VHDS is delta only.
func TestVHDS(t *testing.T) {
	eachMode(t, []xdsMode{{"ads-delta", true, "DELTA_GRPC"}, {"delta", false, "DELTA_GRPC"}, {"ads", true, "GRPC"}}, func(t *testing.T, cp *controlPlane, boot string) {
		own, eager, onDemand := named(t, "own"), named(t, "eager"), named(t, "on-demand")
		laddr := "127.0.0.1:" + freePort(t)
		src := `{"ads":{},"resource_api_version":"V3"}`
		if cp.source != nil {
			b, _ := protojson.Marshal(cp.source)
			src = string(b)
		}
		rc := fromJSON(t, &routev3.RouteConfiguration{}, `{"name":"vr","vhds":{"config_source":`+src+`},
		  "virtual_hosts":[{"name":"own","domains":["own.example"],"routes":[{"match":{"prefix":"/"},"route":{"cluster":"cown"}}]}]}`)
		push := func(v string, vhosts ...types.Resource) {
			cp.set(v, map[resource.Type][]types.Resource{
				resource.ListenerType:    {vhdsListener(t, laddr, src)},
				resource.RouteType:       {rc},
				resource.VirtualHostType: vhosts,
				resource.ClusterType:     {testutil.XDSCluster("cown"), testutil.XDSCluster("ceager"), testutil.XDSCluster("cdemand")},
				resource.EndpointType: {testutil.XDSEndpoints("cown", own), testutil.XDSEndpoints("ceager", eager),
					testutil.XDSEndpoints("cdemand", onDemand)},
			})
		}
		push("1", vhost(t, "vr", "eager.example", "ceager"), vhost(t, "vr/demand.example", "demand.example", "cdemand"),
			vhost(t, "vr/bad.example", "own.example", "cdemand"))
		p := startProxy(t, boot)
		url := "http://" + laddr + "/"
		if !strings.Contains(boot, "DELTA_GRPC") {
			testutil.Eventually(t, 10*time.Second, "the route configuration's NACK", func() bool {
				cp.mu.Lock()
				defer cp.mu.Unlock()
				for _, r := range cp.nacks {
					if strings.Contains(r, `route configuration "vr"`) && strings.Contains(r, "VHDS is delta xDS only") {
						return true
					}
				}
				return false
			})
			return
		}
		testutil.Eventually(t, 10*time.Second, "the eager virtual host", func() bool {
			code, got := hostGet(url, "eager.example")
			return code == 200 && got == "eager"
		})
		if code, got := hostGet(url, "own.example"); code != 200 || got != "own" {
			t.Fatalf("own.example: %d %q", code, got)
		}
		before := p.stat("xds.vhds.update_success")
		if code, got := hostGet(url, "Demand.Example"); code != 200 || got != "on-demand" {
			t.Fatalf("demand.example on demand: %d %q", code, got)
		}
		// The update applies (and the request routes) before the xDS
		// client counts it: wait for the count.
		testutil.Eventually(t, 5*time.Second, "the on-demand update counted in xds.vhds.update_success", func() bool {
			return p.stat("xds.vhds.update_success") > before
		})
		start := time.Now()
		if code, _ := hostGet(url, "unknown.example"); code != 404 {
			t.Fatalf("unknown.example: %d, want 404", code)
		}
		if d := time.Since(start); d < 900*time.Millisecond || d > 4*time.Second {
			t.Fatalf("unknown.example answered after %v, want the 1 s request timeout", d)
		}
		// A host with a '/' cannot name a virtual host: 404 at once.
		start = time.Now()
		if code, _ := hostGet(url, "x/y"); code != 404 || time.Since(start) > 500*time.Millisecond {
			t.Fatalf("x/y: %d after %v", code, time.Since(start))
		}
		// bad.example's virtual host repeats own.example's domain: it is
		// refused by name (NACK) and the rest keep serving.
		n := cp.nackCount()
		if code, _ := hostGet(url, "bad.example"); code != 404 {
			t.Fatalf("bad.example: %d, want 404", code)
		}
		testutil.Eventually(t, 5*time.Second, "bad.example's NACK", func() bool {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			for _, r := range cp.nacks[n:] {
				if strings.Contains(r, `virtual host "vr/bad.example"`) {
					return true
				}
			}
			return false
		})
		for host, want := range map[string]string{"own.example": "own", "eager.example": "eager", "demand.example": "on-demand"} {
			if code, got := hostGet(url, host); code != 200 || got != want {
				t.Fatalf("%s after the refusal: %d %q", host, code, got)
			}
		}
		// An update moves demand.example to the eager cluster.
		push("2", vhost(t, "vr", "eager.example", "ceager"), vhost(t, "vr/demand.example", "demand.example", "ceager"))
		testutil.Eventually(t, 5*time.Second, "the changed virtual host", func() bool {
			code, got := hostGet(url, "demand.example")
			return code == 200 && got == "eager"
		})
		_, dump := get(t, p.admin()+"/config_dump")
		if !strings.Contains(dump, "demand.example") || !strings.Contains(dump, `"vhds"`) {
			t.Fatalf("config dump lacks the VHDS virtual hosts:\n%s", dump)
		}
	})
}
