package test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/straitproxy/strait/internal/testutil"
)

// TestDebugLogShowsXDS: with --log-level debug, every xDS exchange is a
// line (request, response, ACK, NACK with type, version, nonce and
// names), and so is every cluster and listener change; per-request lines
// appear only at trace.
func TestDebugLogShowsXDS(t *testing.T) {
	for _, level := range []string{"debug", "trace"} {
		t.Run(level, func(t *testing.T) {
			cp := startControlPlane(t, "")
			a := named(t, "a")
			laddr := "127.0.0.1:" + freePort(t)
			res := func(route string) map[resource.Type][]types.Resource {
				return map[resource.Type][]types.Resource{
					resource.ListenerType: {testutil.XDSListener("ingress", laddr, "r1", "")},
					resource.RouteType:    {testutil.XDSRoute("r1", "c1", route)},
					resource.ClusterType:  {testutil.XDSCluster("c1")}, resource.EndpointType: {testutil.XDSEndpoints("c1", a)},
				}
			}
			cp.set("1", res(""))
			p := runStrait(t, xdsBootstrap(cp.addr, false), 1, "--log-level", level)
			waitBody(t, "http://"+laddr+"/", "a", 5*time.Second)
			cp.set("2", res(`{"match":{"safe_regex":{"regex":"(bad"}},"route":{"cluster":"c1"}},`))
			testutil.Eventually(t, 5*time.Second, "the NACK in the log", func() bool { return strings.Contains(p.stderr.String(), "xDS NACK") })
			log := p.stderr.String()
			for _, want := range []string{
				`msg="xDS request" component=xds type=Cluster version="" nonce=""`,
				`msg="xDS response" component=xds type=Cluster version=1 nonce=`,
				`msg="xDS ACK" component=xds type=Cluster version=1`,
				`msg="xDS response" component=xds type=Listener version=1`,
				`msg="xDS ACK" component=xds type=Listener version=1`,
				`msg="xDS request" component=xds type=RouteConfiguration version="" nonce="" names=[r1]`,
				`msg="xDS response" component=xds type=ClusterLoadAssignment version=1 nonce=`,
				`names=[c1]`,
				`msg="xDS NACK" component=xds type=RouteConfiguration version=1`,
				`msg="cluster added" cluster=c1`,
				`msg="listener warming" listener=ingress`,
				`msg="route configuration updated" route_config=r1`,
			} {
				if !strings.Contains(log, want) {
					t.Errorf("the %s log lacks %s", level, want)
				}
			}
			if n := len(regexp.MustCompile(`msg="xDS ACK" component=xds type=Cluster version=1 `).FindAllString(log, -1)); n != 1 {
				t.Errorf("%d ACK lines for one CDS response", n)
			}
			c := &http.Client{Timeout: 2 * time.Second}
			body(c, "http://"+laddr+"/x")
			c.CloseIdleConnections()
			traced := func() bool {
				l := p.stderr.String()
				return strings.Contains(l, `level=TRACE msg=request`) && strings.Contains(l, `method=GET path=/x`) &&
					strings.Contains(l, `msg="connection accepted"`) && strings.Contains(l, `msg="connection closed"`)
			}
			if level == "trace" {
				testutil.Eventually(t, 2*time.Second, "trace lines", traced)
			} else {
				time.Sleep(100 * time.Millisecond)
				if strings.Contains(p.stderr.String(), "TRACE") {
					t.Fatal(fmt.Sprintf("trace lines at %s", level))
				}
			}
		})
	}
}
