package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol/dubbo/dubbotest"
)

// TestXDSDubbo: a dubbo_proxy listener and its EDS clusters come from
// go-control-plane, state of the world and delta. Calls follow an LDS
// update that moves a method to another cluster (new connections get the
// new routes; a connection of the old listener is closed once its calls
// are answered, and the client reconnects, as Dubbo clients do), and an
// update Strait cannot apply is NACKed with the field and changes
// nothing.
func TestXDSDubbo(t *testing.T) {
	eachMode(t, []xdsMode{{"ads", true, "GRPC"}, {"ads-delta", true, "DELTA_GRPC"}}, testXDSDubbo)
}

func testXDSDubbo(t *testing.T, cp *controlPlane, boot string) {
	provA := startProvider(t, func(*dubbotest.Call) (any, string, byte) { return "A", "", 0 })
	provB := startProvider(t, func(*dubbotest.Call) (any, string, byte) { return "B", "", 0 })
	laddr := "127.0.0.1:" + freePort(t)
	listener := func(cluster, extra string) *listenerv3.Listener {
		return fromJSON(t, &listenerv3.Listener{}, mustJSON(t, `
name: rpc
address: { socket_address: { address: 127.0.0.1, port_value: `+laddr[strings.LastIndex(laddr, ":")+1:]+` } }
filter_chains:
- filters:
  - name: envoy.filters.network.dubbo_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy
      stat_prefix: rpc
      route_config:
      - name: svc
        interface: org.example.Svc
        routes:
        - match: { method: { name: { exact: get } } }
          route: { cluster: `+cluster+extra+` }
`))
	}
	res := func(l *listenerv3.Listener) map[resource.Type][]types.Resource {
		return map[resource.Type][]types.Resource{
			resource.ListenerType: {l},
			resource.ClusterType:  {testutil.XDSCluster("a"), testutil.XDSCluster("b")},
			resource.EndpointType: {testutil.XDSEndpoints("a", provA.Addr), testutil.XDSEndpoints("b", provB.Addr)},
		}
	}
	cp.set("1", res(listener("a", "")))
	p := startProxy(t, boot)
	call := func(c *dubbotest.Client) (string, error) {
		r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Svc", Method: "get"}, 5*time.Second)
		if err != nil {
			return "", err
		}
		if r.Status != 20 {
			return "", &dubboStatusError{r}
		}
		s, _ := r.Value.(string)
		return s, nil
	}
	// waitFor dials until a new connection's call answers want.
	waitFor := func(want string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, "calls answered by "+want, func() bool {
			c, err := dubbotest.Dial(laddr)
			if err != nil {
				return false
			}
			defer c.Close()
			got, err := call(c)
			return err == nil && got == want
		})
	}
	waitFor("A")
	old := dialDubbo(t, laddr)
	if got, err := call(old); got != "A" || err != nil {
		t.Fatalf("first call: %q, %v", got, err)
	}

	cp.set("2", res(listener("b", "")))
	waitFor("B")
	// The old listener's connection is drained: closed, now that it is
	// idle, without a call lost.
	testutil.Eventually(t, 10*time.Second, "the old connection to close", func() bool {
		_, err := call(old)
		return err != nil
	})

	// A route Strait refuses: NACKed, and B keeps answering.
	cp.set("3", res(listener("a", `, metadata_match: { filter_metadata: { envoy.lb: { canary: true } } }`)))
	testutil.Eventually(t, 10*time.Second, "a NACK", func() bool { return cp.nackCount() > 0 })
	cp.mu.Lock()
	nack := cp.nacks[0]
	cp.mu.Unlock()
	if !strings.Contains(nack, "metadata_match") {
		t.Errorf("NACK %q does not name metadata_match", nack)
	}
	c := dialDubbo(t, laddr)
	if got, err := call(c); got != "B" || err != nil {
		t.Errorf("after the NACK: %q, %v; want B", got, err)
	}
	// A route to a cluster CDS has not sent yet is accepted, as Envoy
	// does: its calls fail (70) until the cluster arrives, then reach it.
	nacks := cp.nackCount() // (the last version's NACK may be repeated)
	late := func(withCluster bool) map[resource.Type][]types.Resource {
		r := res(listener("late", ""))
		if withCluster {
			r[resource.ClusterType] = append(r[resource.ClusterType], testutil.XDSCluster("late"))
			r[resource.EndpointType] = append(r[resource.EndpointType], testutil.XDSEndpoints("late", provA.Addr))
		}
		return r
	}
	cp.set("4", late(false))
	testutil.Eventually(t, 10*time.Second, "calls to the missing cluster to fail", func() bool {
		c, err := dubbotest.Dial(laddr)
		if err != nil {
			return false
		}
		defer c.Close()
		r, err := c.Invoke(&dubbotest.Call{Service: "org.example.Svc", Method: "get"}, 5*time.Second)
		return err == nil && r.Status == 70
	})
	cp.mu.Lock()
	for _, n := range cp.nacks[nacks:] {
		if strings.Contains(n, "late") {
			t.Errorf("a route to a cluster still to come was NACKed: %s", n)
		}
	}
	cp.mu.Unlock()
	cp.set("5", late(true))
	waitFor("A")
	if n := p.stat("dubbo.rpc.request"); n < 2 {
		t.Errorf("dubbo.rpc.request = %d", n)
	}
}

type dubboStatusError struct{ r *dubbotest.Result }

func (e *dubboStatusError) Error() string { return fmt.Sprintf("status %d: %s", e.r.Status, e.r.Error) }
