// Command grpc is the gRPC benchmark peer: "serve" runs grpc-go's
// TestService (UnaryCall echoes a payload of the requested size) on a
// loopback address; "load" makes unary calls with C concurrent callers
// over one connection for D and prints calls/s, p50 and p99 latency, as
// ghz would. bench/run.sh grpc drives it against the server directly and
// through Strait.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

type service struct {
	testpb.UnimplementedTestServiceServer
}

func (service) UnaryCall(_ context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, in.GetResponseSize())}}, nil
}

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: grpc serve|load [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen (serve) or call (load) address")
	conc := fs.Int("c", 50, "concurrent callers (load)")
	dur := fs.Duration("d", 5*time.Second, "load duration (load)")
	size := fs.Int("size", 128, "request and response payload bytes (load)")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "serve":
		serve(*addr)
	case "load":
		load(*addr, *conc, *dur, *size)
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

func serve(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, service{})
	log.Fatal(s.Serve(ln))
}

func load(addr string, conc int, dur time.Duration, size int) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	client := testpb.NewTestServiceClient(cc)
	req := &testpb.SimpleRequest{ResponseSize: int32(size), Payload: &testpb.Payload{Body: make([]byte, size)}}
	if _, err := client.UnaryCall(context.Background(), req); err != nil {
		log.Fatalf("warm-up call: %v", err)
	}
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(deadline) {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := client.UnaryCall(ctx, req)
				cancel()
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds())
	}
	// One line: calls, calls/s, p50 us, p99 us, errors.
	fmt.Printf("%d %.1f %.0f %.0f %d\n", len(lat), float64(len(lat))/elapsed.Seconds(), pct(0.50), pct(0.99), errs)
}
