// Command xds measures how fast Strait follows a control plane: the time
// from a snapshot being set in go-control-plane's cache to the first
// request routed by the new version (over N route flips), and the time to
// apply an EDS update of 10,000 endpoints while requests keep flowing
// (with those requests' latency). Strait runs as the binary given by
// -strait; the control plane and two origins run in this process. All on
// 127.0.0.1; every loop is bounded.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"google.golang.org/grpc"
)

func main() {
	straitBin := flag.String("strait", "", "path to the strait binary")
	updates := flag.Int("updates", 100, "route flips to time")
	endpoints := flag.Int("endpoints", 10000, "endpoints in the large EDS update")
	delta := flag.Bool("delta", false, "use DELTA_GRPC")
	churnModel := flag.String("churn", "", "instead: updates under wrk load through this I/O model (netpoll or epoll)")
	flag.Parse()
	if *straitBin == "" {
		log.Fatal("-strait is required")
	}
	if *churnModel != "" {
		churn(*straitBin, *churnModel, *delta)
		return
	}
	a, b := origin("a"), origin("b")
	snaps := cache.NewSnapshotCache(false, cache.IDHash{}, nil)
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xdsserver.NewServer(context.Background(), snaps, nil))
	cpLn := listen()
	go gs.Serve(cpLn)
	defer gs.Stop()

	lAddr := freeAddr()
	version := 0
	set := func(cluster string, eps []*endpointv3.ClusterLoadAssignment) {
		version++
		res := map[resource.Type][]types.Resource{
			resource.ListenerType: {testutil.XDSListener("ingress", lAddr, "r", "")},
			resource.RouteType:    {testutil.XDSRoute("r", cluster, "")},
			resource.ClusterType:  {testutil.XDSCluster("c1"), testutil.XDSCluster("c2")},
		}
		for _, e := range eps {
			res[resource.EndpointType] = append(res[resource.EndpointType], e)
		}
		snap, err := cache.NewSnapshot(strconv.Itoa(version), res)
		if err != nil {
			log.Fatal(err)
		}
		if err := snaps.SetSnapshot(context.Background(), "bench", snap); err != nil {
			log.Fatal(err)
		}
	}
	small := []*endpointv3.ClusterLoadAssignment{testutil.XDSEndpoints("c1", a), testutil.XDSEndpoints("c2", b)}
	set("c1", small)

	dir, err := os.MkdirTemp("", "strait-xds-bench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	adminAddr := freeAddr()
	boot := filepath.Join(dir, "bootstrap.yaml")
	os.WriteFile(boot, []byte(testutil.XDSBootstrap("bench", cpLn.Addr().String(), adminAddr, *delta)), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, *straitBin, "-c", boot, "--log-level", "warning")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()

	url := "http://" + lAddr + "/"
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	if _, err := waitFor(client, url, "a", 20*time.Second); err != nil {
		log.Fatal(err)
	}

	// Route flips: set, then poll until the answer changes.
	var lat []time.Duration
	cur := "a"
	for i := 0; i < *updates; i++ {
		next, cl := "b", "c2"
		if cur == "b" {
			next, cl = "a", "c1"
		}
		set(cl, small)
		d, err := waitFor(client, url, next, 5*time.Second)
		if err != nil {
			log.Fatal(err)
		}
		lat = append(lat, d)
		cur = next
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("route update → first request on the new route, %d updates (%s): p50 %v  p99 %v  max %v\n",
		len(lat), mode(*delta), lat[len(lat)/2].Round(10*time.Microsecond), lat[len(lat)*99/100].Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))

	// The large update: c1 gets its live origin at priority 0 and
	// 10,000 more endpoints at priority 1, which take no traffic while
	// priority 0 is healthy; requests keep flowing meanwhile.
	if cur != "a" {
		set("c1", small)
		if _, err := waitFor(client, url, "a", 5*time.Second); err != nil {
			log.Fatal(err)
		}
	}
	big := bigCLA("c1", a, *endpoints)
	// The same request loop runs before the update (the baseline) and
	// across it.
	load := func(stop chan struct{}, out chan []time.Duration) {
		var l []time.Duration
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				out <- l
				return
			default:
			}
			t := time.Now()
			if code, _ := fetch(client, url); code != 200 {
				log.Fatalf("request failed during the large update: %d", code)
			}
			l = append(l, time.Since(t))
			time.Sleep(2 * time.Millisecond)
		}
		out <- l
	}
	stop := make(chan struct{})
	reqLat := make(chan []time.Duration)
	go load(stop, reqLat)
	time.Sleep(400 * time.Millisecond)
	close(stop)
	base := <-reqLat
	sort.Slice(base, func(i, j int) bool { return base[i] < base[j] })
	stop = make(chan struct{})
	go load(stop, reqLat)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	set("c1", []*endpointv3.ClusterLoadAssignment{big, testutil.XDSEndpoints("c2", b)})
	want := strconv.Itoa(*endpoints + 1)
	for time.Since(start) < 60*time.Second {
		if v := stat(adminAddr, "cluster.c1.membership_total"); v == want {
			break
		}
		time.Sleep(time.Millisecond)
	}
	applied := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	l := <-reqLat
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	fmt.Printf("EDS update of %d endpoints: applied (membership_total seen) in %v; %d requests across it, p50 %v p99 %v max %v, none failed; baseline without an update (%d requests): p50 %v p99 %v max %v\n",
		*endpoints+1, applied.Round(time.Millisecond), len(l), l[len(l)/2].Round(10*time.Microsecond), l[len(l)*99/100].Round(10*time.Microsecond), l[len(l)-1].Round(10*time.Microsecond),
		len(base), base[len(base)/2].Round(10*time.Microsecond), base[len(base)*99/100].Round(10*time.Microsecond), base[len(base)-1].Round(10*time.Microsecond))
}

func mode(delta bool) string {
	if delta {
		return "delta"
	}
	return "state of the world"
}

func waitFor(c *http.Client, url, want string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for time.Since(start) < limit {
		if code, body := fetch(c, url); code == 200 && body == want {
			return time.Since(start), nil
		}
	}
	return 0, fmt.Errorf("%s never answered %q", url, want)
}

func httpClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
}

func fetch(c *http.Client, url string) (int, string) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, ""
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

func stat(admin, name string) string {
	code, body := fetch(http.DefaultClient, "http://"+admin+"/stats?filter="+name)
	if code != 200 {
		return ""
	}
	for _, line := range strings.Split(body, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && k == name {
			return v
		}
	}
	return ""
}

func origin(name string) string {
	ln := listen()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
	return ln.Addr().String()
}

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	return ln
}

func freeAddr() string {
	ln := listen()
	defer ln.Close()
	return ln.Addr().String()
}

// bigCLA is the live origin at priority 0 and n more endpoints at
// priority 1 (10.100.0.0 and up, never picked while priority 0 is
// healthy).
func bigCLA(name, live string, n int) *endpointv3.ClusterLoadAssignment {
	c := testutil.XDSEndpoints(name, live)
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.%d.%d.%d:80", 100+i>>16&63, i>>8&255, i&255)
	}
	p1 := testutil.XDSEndpoints(name, addrs...).Endpoints[0]
	p1.Priority = 1
	c.Endpoints = append(c.Endpoints, p1)
	return c
}
