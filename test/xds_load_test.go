package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// loadResult counts a load's requests.
type loadResult struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	fails        []string
	wait         func()
}

func (r *loadResult) fail(s string) {
	r.failed.Add(1)
	r.mu.Lock()
	if len(r.fails) < 10 {
		r.fails = append(r.fails, s)
	}
	r.mu.Unlock()
}

// keepLoad runs clients keep-alive clients POSTing to url until ctx ends
// (each bounded to maxEach requests). POST: Go's client retries a failed
// GET on a fresh connection by itself, which would hide a failure.
func keepLoad(ctx context.Context, url string, clients, maxEach int, ok func(string) bool) *loadResult {
	r := &loadResult{}
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			for i := 0; i < maxEach && ctx.Err() == nil; i++ {
				r.sent.Add(1)
				resp, err := c.Post(url, "text/plain", strings.NewReader("ping"))
				if err != nil {
					r.fail(err.Error())
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !ok(string(b)) {
					r.fail(fmt.Sprintf("%d %q %v", resp.StatusCode, b, err))
				}
			}
		}()
	}
	r.wait = wg.Wait
	return r
}

// TestXDSUpdatesUnderLoad: under steady keep-alive load, 20 updates that
// each add a cluster and move the route to it (removing the previous
// one) and 5 updates of the listener on the same address fail no
// request. The control plane orders its responses as an ADS server must
// (go-control-plane's cache in ADS mode: CDS, EDS, LDS, RDS).
func TestXDSUpdatesUnderLoad(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) { testUpdatesUnderLoad(t, delta) })
	}
}

func testUpdatesUnderLoad(t *testing.T, delta bool) {
	{
		cp := startControlPlaneWith(t, "", cache.NewSnapshotCache(true, cache.IDHash{}, nil))
		ups := []string{named(t, "u0"), named(t, "u1"), named(t, "u2")}
		laddr := "127.0.0.1:" + freePort(t)
		push := func(v, lv int) {
			c := fmt.Sprintf("c%d", v)
			l := testutil.XDSListener("ingress", laddr, "r", "")
			// A listener version differs by a field that changes no
			// traffic: each new one takes over the socket and drains the
			// old one's connections.
			l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(uint32(1<<20 + lv))
			cp.set(fmt.Sprint(v), map[resource.Type][]types.Resource{
				resource.ListenerType: {l},
				resource.RouteType:    {testutil.XDSRoute("r", c, "")},
				resource.ClusterType:  {testutil.XDSCluster(c)}, resource.EndpointType: {testutil.XDSEndpoints(c, ups[v%3])},
			})
		}
		push(0, 0)
		p := startProxy(t, xdsBootstrap(cp.addr, delta))
		url := "http://" + laddr + "/"
		waitBody(t, url, "u0", 10*time.Second)
		ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
		defer stop()
		load := keepLoad(ctx, url, 8, 50000, func(b string) bool { return strings.HasPrefix(b, "u") })
		lv := 0
		for v := 1; v <= 20; v++ {
			time.Sleep(100 * time.Millisecond)
			if v%4 == 0 {
				lv++
			}
			push(v, lv)
			waitBody(t, url, fmt.Sprintf("u%d", v%3), 5*time.Second)
		}
		time.Sleep(200 * time.Millisecond)
		stop()
		load.wait()
		t.Logf("%d requests, %d failed, %d listener versions", load.sent.Load(), load.failed.Load(), lv+1)
		if load.failed.Load() != 0 || load.sent.Load() < 500 {
			t.Fatalf("%d of %d requests failed: %q", load.failed.Load(), load.sent.Load(), load.fails)
		}
		if n := cp.nackCount(); n != 0 {
			t.Fatalf("%d NACKs", n)
		}
		if p.stat("listener_manager.lds.update_success") < 6 {
			t.Fatalf("lds updates: %d", p.stat("listener_manager.lds.update_success"))
		}
	}
}
