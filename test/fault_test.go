package test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/server"
)

// envoy.filters.http.fault end to end (issue 13).

func faultFilter(cfg string) string {
	return `          - name: envoy.filters.http.fault
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, ` + cfg + ` }
`
}

const allRoutes = `              - match: { prefix: "/" }
                route: { cluster: backend }
`

// TestFaultAbortRate: an abort at 10 % over 10,000 requests (2,000
// with -short) lands within the binomial bound (4.5 standard
// deviations), counted in the stats.
func TestFaultAbortRate(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, filterBootstrap(up.Addr, faultFilter(`abort: { http_status: 418, percentage: { numerator: 10 } }`), allRoutes))
	n := 10000
	if testing.Short() {
		n = 2000
	}
	var aborted, ok atomic.Int64
	var wg sync.WaitGroup
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := c.Get(p.url("in") + "/x")
			if err != nil {
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == 418 && string(b) == "fault filter abort\n":
				aborted.Add(1)
			case resp.StatusCode == 200:
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	mean, sd := float64(n)*0.1, math.Sqrt(float64(n)*0.1*0.9)
	if a := float64(aborted.Load()); math.Abs(a-mean) > 4.5*sd || aborted.Load()+ok.Load() != int64(n) {
		t.Fatalf("%d aborted, %d ok of %d (expected %.0f ± %.0f)", aborted.Load(), ok.Load(), n, mean, 4.5*sd)
	}
	if got := p.stat("http.in.fault.aborts_injected"); got != aborted.Load() {
		t.Fatalf("aborts_injected = %d, saw %d", got, aborted.Load())
	}
}

// TestFaultDelayHoldsNoWorker: a 1 s delay on 500 concurrent requests
// (200 with -short) finishes in about 1 s in all with 4 workers: the
// delay is a timer.
func TestFaultDelayHoldsNoWorker(t *testing.T) {
	up := testutil.StartUpstream(t)
	b, err := config.Parse([]byte(filterBootstrap(up.Addr, faultFilter(`delay: { fixed_delay: 1s, percentage: { numerator: 100 } }`), allRoutes)), true)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(b, server.Options{Log: slog.New(slog.DiscardHandler), DrainTime: time.Second, IOModel: ioModel(), Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	url := "http://" + srv.ListenerAddr("in").String() + "/d"
	n := 500
	if testing.Short() {
		n = 200
	}
	start := time.Now()
	var wg sync.WaitGroup
	var good atomic.Int64
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := (&http.Client{Transport: tr}).Get(url)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				good.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if good.Load() != int64(n) || el < time.Second || el > 3*time.Second {
		t.Fatalf("%d of %d in %v", good.Load(), n, el)
	}
	if w := srv.Pool().Workers(); w > 4 {
		t.Fatalf("%d workers", w)
	}
}

// TestFaultHeaders: header-controlled faults, matchers, downstream nodes,
// max_active_faults, a gRPC abort, and the stats.
func TestFaultHeaders(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, filterBootstrap(up.Addr, faultFilter(`delay: { header_delay: {}, percentage: { numerator: 100 } }, abort: { header_abort: {}, percentage: { numerator: 100 } }, headers: [ { name: x-chaos, present_match: true } ]`), allRoutes))
	base := p.url("in")
	start := time.Now()
	resp, body := doReq(t, "GET", base+"/a", "", "x-chaos", "1", "x-envoy-fault-delay-request", "200")
	if resp.StatusCode != 200 || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("header delay: %d %q after %v", resp.StatusCode, body, time.Since(start))
	}
	resp, _ = doReq(t, "GET", base+"/a", "", "x-chaos", "1", "x-envoy-fault-abort-request", "429")
	if resp.StatusCode != 429 {
		t.Fatalf("header abort: %d", resp.StatusCode)
	}
	resp, _ = doReq(t, "GET", base+"/a", "", "x-chaos", "1", "x-envoy-fault-abort-request", "429", "x-envoy-fault-abort-request-percentage", "0")
	if resp.StatusCode != 200 {
		t.Fatalf("header percentage 0: %d", resp.StatusCode)
	}
	resp, _ = doReq(t, "GET", base+"/a", "", "x-envoy-fault-abort-request", "429")
	if resp.StatusCode != 200 {
		t.Fatalf("without the matched header: %d", resp.StatusCode)
	}
	// A gRPC request aborted with a gRPC status: trailers-only.
	resp, _ = doReq(t, "POST", base+"/svc/M", "", "content-type", "application/grpc", "te", "trailers", "x-chaos", "1", "x-envoy-fault-abort-grpc-request", "14")
	if resp.StatusCode != 200 || resp.Header.Get("grpc-status") != "14" {
		t.Fatalf("gRPC abort: %d %v", resp.StatusCode, resp.Header)
	}
	for name, want := range map[string]int64{"http.in.fault.delays_injected": 1, "http.in.fault.aborts_injected": 2, "http.in.fault.active_faults": 0} {
		// (a fault ends when its stream is finished, just after the reply)
		testutil.Eventually(t, 2*time.Second, name, func() bool { return p.stat(name) == want })
	}

	// max_active_faults 1: while one request is delayed, the next one
	// overflows and passes at once; downstream_nodes scopes the fault.
	p2 := startProxy(t, filterBootstrap(up.Addr, faultFilter(`delay: { fixed_delay: 0.5s, percentage: { numerator: 100 } }, max_active_faults: 1, downstream_nodes: [canary]`), allRoutes))
	done := make(chan struct{})
	go func() {
		doReq(t, "GET", p2.url("in")+"/slow", "", "x-envoy-downstream-service-node", "canary")
		close(done)
	}()
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	doReq(t, "GET", p2.url("in")+"/fast", "", "x-envoy-downstream-service-node", "canary")
	if time.Since(start) > 300*time.Millisecond || p2.stat("http.in.fault.faults_overflow") != 1 {
		t.Fatalf("overflow: %v, faults_overflow %d", time.Since(start), p2.stat("http.in.fault.faults_overflow"))
	}
	start = time.Now()
	doReq(t, "GET", p2.url("in")+"/other", "", "x-envoy-downstream-service-node", "prod")
	if time.Since(start) > 300*time.Millisecond {
		t.Fatal("a node not listed was delayed")
	}
	<-done
}

// TestFaultConfigErrors: bad configs, and what is not implemented, are
// refused.
func TestFaultConfigErrors(t *testing.T) {
	up := testutil.StartUpstream(t)
	for _, c := range []struct{ cfg, want string }{
		{`response_rate_limit: { percentage: { numerator: 100 } }`, "response_rate_limit"},
		{`response_rate_limit: { fixed_limit: { limit_kbps: 0 } }`, "response_rate_limit.fixed_limit.limit_kbps: value must be greater than or equal to 1"},
		{`abort: { percentage: { numerator: 1 } }`, "abort"},
		{`filter_metadata: { a: 1 }`, "filter_metadata: not supported yet"},
	} {
		_, err := buildServer(filterBootstrap(up.Addr, faultFilter(c.cfg), allRoutes))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestFiltersOverH2AndGRPC: the same RBAC and fault filters on HTTP/2
// clients and gRPC calls to an HTTP/2 upstream (grpc-go's interop
// server and client): a denial and an abort become gRPC statuses, a
// delay holds an h2 stream, and the interop client's calls pass through
// the chain untouched.
func TestFiltersOverH2AndGRPC(t *testing.T) {
	addr := startInteropServer(t)
	filters := `          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules: { action: DENY, policies: { blocked: { permissions: [ { header: { name: x-block, present_match: true } } ], principals: [ { any: true } ] } } }
` + faultFilter(`delay: { header_delay: {}, percentage: { numerator: 100 } }, abort: { header_abort: {}, percentage: { numerator: 100 } }`)
	y := filterBootstrap(addr, filters, allRoutes)
	y = strings.Replace(y, "    connect_timeout: 1s\n", "    connect_timeout: 1s\n"+h2Upstream+"\n", 1)
	p := startProxy(t, y)
	base := p.url("in") + "/grpc.testing.TestService/EmptyCall"
	if r := grpcCall(t, base, map[string]string{"x-block": "1"}); r.StatusCode != 200 || grpcStatus(r) != "7" {
		t.Fatalf("RBAC denial of a gRPC call: %d grpc-status %q", r.StatusCode, grpcStatus(r))
	}
	if r := grpcCall(t, base, map[string]string{"x-envoy-fault-abort-grpc-request": "14"}); grpcStatus(r) != "14" {
		t.Fatalf("gRPC fault abort: grpc-status %q", grpcStatus(r))
	}
	start := time.Now()
	if r := grpcCall(t, base, map[string]string{"x-envoy-fault-delay-request": "200"}); grpcStatus(r) != "0" || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("delayed gRPC call: grpc-status %q after %v", grpcStatus(r), time.Since(start))
	}
	// A plain HTTP/2 request denied by RBAC.
	req, _ := http.NewRequest("GET", p.url("in")+"/x", nil)
	req.Header.Set("x-block", "1")
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.ProtoMajor != 2 {
		t.Fatalf("h2 denial: %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}
	runInterop(t, p.addr("in"))
}

// TestFaultResponseRateLimit: response_rate_limit paces the response
// body at its rate (fixed, or the client's x-envoy-fault-throughput-
// response), within 10 %, on HTTP/1.1 and HTTP/2; headers come at once.
func TestFaultResponseRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of paced responses")
	}
	up := testutil.StartUpstream(t)
	routes := `              - match: { prefix: "/size/", headers: [ { name: x-by-header, present_match: true } ] }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
                    response_rate_limit: { header_limit: {}, percentage: { numerator: 100 } }
` + allRoutes
	p := startProxy(t, filterBootstrap(up.Addr, faultFilter(`response_rate_limit: { fixed_limit: { limit_kbps: 256 }, percentage: { numerator: 100 } }`), routes))
	fetch := func(c *http.Client, size, kib int, hdr ...string) {
		t.Helper()
		req, _ := http.NewRequest("GET", p.url("in")+"/size/"+strconv.Itoa(size), nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if head := time.Since(start); head > 200*time.Millisecond {
			t.Errorf("headers took %v", head)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		el := time.Since(start)
		// The bucket starts with a sixteenth of a second's worth.
		want := time.Duration(float64(size-kib*1024/16) / float64(kib*1024) * float64(time.Second))
		t.Logf("%s: %d bytes at %d KiB/s in %v (want about %v)", resp.Proto, n, kib, el, want)
		if int(n) != size || math.Abs(float64(el-want)) > 0.10*float64(want) {
			t.Errorf("%d bytes in %v, want %d in %v ± 10 %%", n, el, size, want)
		}
	}
	fetch(http.DefaultClient, 512<<10, 256)
	fetch(h2cClient(), 256<<10, 256)
	fetch(http.DefaultClient, 128<<10, 128, "x-by-header", "1", "x-envoy-fault-throughput-response", "128")
	if got := p.stat("http.in.fault.response_rl_injected"); got != 3 {
		t.Errorf("response_rl_injected = %d", got)
	}
}
