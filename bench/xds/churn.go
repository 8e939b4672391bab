package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// churn runs wrk (keep-alive, 50 connections) through the Strait binary
// on ioModel while the control plane makes 20 updates that each add a
// cluster and move the route to it (removing the previous one), every 5th
// version also replacing the listener on the same address (5 listener
// updates in all), and prints what wrk counted: requests, non-2xx
// answers and socket errors. The control plane is go-control-plane's
// cache in ADS mode, which orders a snapshot's responses CDS, EDS, LDS,
// RDS as an ADS server should.
func churn(straitBin, ioModel string, delta bool) {
	origins := []string{origin("u0"), origin("u1"), origin("u2")}
	snaps := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xdsserver.NewServer(context.Background(), snaps, nil))
	cpLn := listen()
	go gs.Serve(cpLn)
	defer gs.Stop()
	lAddr := freeAddr()
	set := func(v, lv int) {
		c := fmt.Sprintf("c%d", v)
		l := testutil.XDSListener("ingress", lAddr, "r", "")
		l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(uint32(1<<20 + lv)) // a new listener version
		snap, err := cache.NewSnapshot(strconv.Itoa(v), map[resource.Type][]types.Resource{
			resource.ListenerType: {l}, resource.RouteType: {testutil.XDSRoute("r", c, "")},
			resource.ClusterType: {testutil.XDSCluster(c)}, resource.EndpointType: {testutil.XDSEndpoints(c, origins[v%3])},
		})
		if err != nil {
			log.Fatal(err)
		}
		if err := snaps.SetSnapshot(context.Background(), "bench", snap); err != nil {
			log.Fatal(err)
		}
	}
	set(0, 0)
	dir, err := os.MkdirTemp("", "strait-xds-churn")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	boot := filepath.Join(dir, "bootstrap.yaml")
	os.WriteFile(boot, []byte(testutil.XDSBootstrap("bench", cpLn.Addr().String(), freeAddr(), delta)), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, straitBin, "-c", boot, "--log-level", "warning", "--io-model", ioModel)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	url := "http://" + lAddr + "/"
	if _, err := waitFor(httpClient(), url, "u0", 20*time.Second); err != nil {
		log.Fatal(err)
	}
	wrk := exec.CommandContext(ctx, "wrk", "-t2", "-c50", "-d8s", url)
	out := make(chan []byte, 1)
	go func() {
		b, err := wrk.CombinedOutput()
		if err != nil {
			log.Fatalf("wrk: %v\n%s", err, b)
		}
		out <- b
	}()
	time.Sleep(time.Second)
	lv := 0
	for v := 1; v <= 20; v++ {
		if v%4 == 0 {
			lv++
		}
		set(v, lv)
		time.Sleep(250 * time.Millisecond)
	}
	res := <-out
	find := func(re string) string {
		if m := regexp.MustCompile(re).FindSubmatch(res); m != nil {
			return string(m[1])
		}
		return "0"
	}
	fmt.Printf("churn (%s, %s): 20 cluster moves + %d listener updates under wrk (50 connections, 8 s): %s requests, %s non-2xx, socket errors: %s\n",
		ioModel, mode(delta), lv, find(`(\d+) requests in`), find(`Non-2xx or 3xx responses: (\d+)`), orNone(find(`Socket errors: ([^\n]+)`)))
}

func orNone(s string) string {
	if s == "0" {
		return "none"
	}
	return s
}
