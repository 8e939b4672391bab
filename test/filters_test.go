package test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/server"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The stream filter contract (issue 13) end to end, through a probe
// filter registered only in this test binary: asynchronous stops that
// hold no worker, the route cache, per-route config and per-route
// disabling, body and trailer phases both ways, local replies through
// the encoders, and OnDestroy when the client leaves a parked stream.

const probeURL = "type.googleapis.com/strait.test.Probe"

type probeConfig struct {
	Tag   string `json:"tag"`
	Upper bool   `json:"upper"` // uppercase the request body as it streams
	Whole bool   `json:"whole"` // buffer the request body, then prefix its length
	Shout bool   `json:"shout"` // uppercase the response body
	Limit int    `json:"limit"` // deny requests whose buffered body passes it (413)
	Clear bool   `json:"clear"` // clear the route cache from the encoder
}

type probeRoute struct {
	Tag string `json:"tag"`
}

var probeDestroyed atomic.Int64

// probeInfo is the stream info a probe saw last, at OnDestroy.
var probeInfo atomic.Pointer[filter.StreamInfo]

func init() {
	filter.RegisterHTTPStruct("strait.test.probe", probeURL, func(_ *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		var c probeConfig
		if err := config.DecodeStruct(m.(*structpb.Struct), &c); err != nil {
			return nil, err
		}
		return &probeFactory{c}, nil
	})
	filter.RegisterHTTPPerRouteStruct("strait.test.probe", "type.googleapis.com/strait.test.ProbeRoute", func(m proto.Message) (any, error) {
		var c probeRoute
		if err := config.DecodeStruct(m.(*structpb.Struct), &c); err != nil {
			return nil, err
		}
		if c.Tag == "" {
			return nil, errors.New("tag: required")
		}
		return &c, nil
	})
}

type probeFactory struct{ c probeConfig }

func (f *probeFactory) New() filter.StreamFilter { return &probe{c: f.c} }

type probe struct {
	c     probeConfig
	timer *time.Timer
	route string
	cb    filter.Callbacks
}

func (p *probe) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	p.cb = cb
	if h.Has("x-deny-" + p.c.Tag) {
		cb.SendLocalReply(403, "denied by "+p.c.Tag, func(h *protocol.Headers) { h.Set("x-denier", p.c.Tag) })
		return filter.Stop
	}
	if v, ok := h.Get("x-reroute-" + p.c.Tag); ok {
		h.Set(protocol.Path, string(v))
		cb.ClearRouteCache()
	}
	p.route = cb.RouteName()
	if p.c.Whole {
		h.Del("content-length") // the body's length changes
	}
	if v, ok := h.Get("x-delay-" + p.c.Tag); ok {
		ms, _ := strconv.Atoi(string(v))
		k := cb.Continuation()
		p.timer = time.AfterFunc(time.Duration(ms)*time.Millisecond, k.Continue)
		return filter.Stop
	}
	return filter.Continue
}

func (p *probe) DecodeData(cb filter.Callbacks, b *filter.Buffer, end bool) filter.Status {
	if p.c.Upper {
		b.B = bytes.ToUpper(b.B)
	}
	if p.c.Whole {
		if p.c.Limit > 0 && len(b.B) > p.c.Limit {
			cb.SendLocalReply(413, "too big for "+p.c.Tag, nil)
			return filter.Stop
		}
		if !end {
			return filter.StopAndBuffer
		}
		b.B = append([]byte(strconv.Itoa(len(b.B))+":"), b.B...)
	}
	return filter.Continue
}

func (p *probe) EncodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	if p.c.Clear {
		cb.ClearRouteCache() // after routing: the route stays
	}
	h.AddString("x-seen", p.c.Tag)
	h.Set("x-route-"+p.c.Tag, p.route)
	if pr, ok := cb.PerRoute().(*probeRoute); ok {
		h.Set("x-per-route-"+p.c.Tag, pr.Tag)
	}
	if p.c.Shout {
		h.Del("content-length")
	}
	return filter.Continue
}

func (p *probe) EncodeData(_ filter.Callbacks, b *filter.Buffer, _ bool) filter.Status {
	if p.c.Shout {
		b.B = bytes.ToUpper(b.B)
	}
	return filter.Continue
}

func (p *probe) OnDestroy() {
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.cb != nil {
		si := *p.cb.Info()
		probeInfo.Store(&si)
	}
	probeDestroyed.Add(1)
}

func probeFilter(tag string, extra ...string) string {
	return namedProbe("strait.test.probe", tag, extra...)
}

func namedProbe(name, tag string, extra ...string) string {
	v := "tag: " + tag
	for _, e := range extra {
		v += ", " + e
	}
	return `          - name: ` + name + `
            typed_config: { "@type": type.googleapis.com/xds.type.v3.TypedStruct, type_url: ` + probeURL + `, value: { ` + v + ` } }
`
}

// filterBootstrap is one listener with the given HTTP filters (before the
// router) and routes, and a cluster "backend" at up.
func filterBootstrap(up, filters, routes string) string {
	return `
static_resources:
  listeners:
  - name: in
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
` + routes + `
          http_filters:
` + filters + `          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
` + staticCluster("backend", up)
}

func doReq(t *testing.T, method, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestFilterContract: phases, order, local replies, route cache,
// per-route config and disabling.
func TestFilterContract(t *testing.T) {
	up := testutil.StartUpstream(t)
	routes := `              - name: direct
                match: { prefix: "/direct" }
                direct_response: { status: 200, body: { inline_string: "direct" } }
              - name: quiet
                match: { prefix: "/quiet" }
                route: { cluster: backend }
                typed_per_filter_config:
                  strait.test.probe: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true }
              - name: tagged
                match: { prefix: "/tagged" }
                route: { cluster: backend }
                typed_per_filter_config:
                  strait.test.probe: { "@type": type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/strait.test.ProbeRoute, value: { tag: special } }
              - name: main
                match: { prefix: "/" }
                route: { cluster: backend }
`
	p := startProxy(t, filterBootstrap(up.Addr, probeFilter("a", "upper: true")+probeFilter("b", "whole: true, limit: 100, shout: true"), routes))
	base := "http://" + p.addr("in")

	// Decoders in order (a uppercases, b buffers and prefixes the length),
	// the encoder of b uppercases the echo; encoders in reverse order.
	resp, body := doReq(t, "POST", base+"/echo", "hello body")
	if body != "10:HELLO BODY" || strings.Join(resp.Header.Values("x-seen"), ",") != "b,a" || resp.Header.Get("x-route-a") != "main" {
		t.Fatalf("echo: %q %v", body, resp.Header)
	}
	// A decoder's local reply passes the encoders before it only.
	resp, body = doReq(t, "GET", base+"/x", "", "x-deny-b", "1")
	if resp.StatusCode != 403 || body != "denied by b\n" || resp.Header.Get("x-denier") != "b" || strings.Join(resp.Header.Values("x-seen"), ",") != "a" {
		t.Fatalf("deny: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// A data filter's reply: 413 past its limit, upstream never answers it.
	resp, body = doReq(t, "POST", base+"/echo", strings.Repeat("x", 200))
	if resp.StatusCode != 413 || body != "too big for b\n" {
		t.Fatalf("limit: %d %q", resp.StatusCode, body)
	}
	// Direct responses pass the encoders too.
	resp, body = doReq(t, "GET", base+"/direct", "")
	if body != "DIRECT" || strings.Join(resp.Header.Values("x-seen"), ",") != "b,a" {
		t.Fatalf("direct: %q %v", body, resp.Header)
	}
	// The route cache: a changes the path and clears the cache; b sees
	// the new route, the router takes it.
	resp, body = doReq(t, "GET", base+"/x", "", "x-reroute-a", "/direct")
	if body != "DIRECT" || resp.Header.Get("x-route-a") != "direct" || resp.Header.Get("x-route-b") != "direct" {
		t.Fatalf("reroute: %q %v", body, resp.Header)
	}
	// Per-route: disabled on /quiet, its own config on /tagged.
	resp, body = doReq(t, "POST", base+"/quiet/echo", "quiet please")
	if body != "ok /quiet/echo" || resp.Header.Get("x-seen") != "" {
		t.Fatalf("quiet: %q %v", body, resp.Header)
	}
	resp, _ = doReq(t, "GET", base+"/tagged", "")
	if resp.Header.Get("x-per-route-a") != "special" || resp.Header.Get("x-per-route-b") != "special" {
		t.Fatalf("tagged: %v", resp.Header)
	}
	// A filter disabled by default runs only where a route enables it.
	y := strings.Replace(filterBootstrap(up.Addr, probeFilter("c"), routes), "          - name: strait.test.probe\n", "          - name: strait.test.probe\n            disabled: true\n", 1)
	y = strings.Replace(y, "disabled: true }", "}", 1) // /quiet now enables it
	p2 := startProxy(t, y)
	base2 := "http://" + p2.addr("in")
	if resp, _ := doReq(t, "GET", base2+"/x", ""); resp.Header.Get("x-seen") != "" {
		t.Fatalf("a filter disabled by default ran: %v", resp.Header)
	}
	if resp, _ := doReq(t, "GET", base2+"/quiet", ""); resp.Header.Get("x-seen") != "c" {
		t.Fatalf("a route enabling it: %v", resp.Header)
	}
}

// TestFilterParking: 40 requests, each held 300 ms by a filter, pass
// through 2 workers in about 300 ms in all: a waiting filter holds no
// worker. A client that leaves while its request is held ends the
// stream at once (OnDestroy runs, the upstream never sees it).
func TestFilterParking(t *testing.T) {
	up := testutil.StartUpstream(t)
	b, err := config.Parse([]byte(filterBootstrap(up.Addr, probeFilter("a"), `              - match: { prefix: "/" }
                route: { cluster: backend }
`)), true)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(b, server.Options{Log: slog.New(slog.DiscardHandler), DrainTime: time.Second, IOModel: ioModel(), Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	addr := srv.ListenerAddr("in").String()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req, _ := http.NewRequest("GET", "http://"+addr+"/held/"+strconv.Itoa(i), nil)
			req.Header.Set("x-delay-a", "300")
			resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
			if err != nil {
				failed.Add(1)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "ok /held/"+strconv.Itoa(i) {
				failed.Add(1)
			}
		}(i)
	}
	wg.Wait()
	el := time.Since(start)
	if failed.Load() > 0 || el > 2*time.Second || el < 300*time.Millisecond {
		t.Fatalf("40 held requests on 2 workers: %d failed, %v in all", failed.Load(), el)
	}

	// The client leaves while held for 10 s.
	before, seen := probeDestroyed.Load(), up.Started.Load()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /gone HTTP/1.1\r\nHost: x\r\nx-delay-a: 10000\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	c.Close()
	deadline := time.Now().Add(3 * time.Second)
	for probeDestroyed.Load() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if probeDestroyed.Load() == before {
		t.Fatal("the held stream did not end when its client left")
	}
	if up.Started.Load() != seen {
		t.Fatal("a request whose client left reached the upstream")
	}
}

// TestHeaderEchoExample: the worked example of docs/adding-a-filter.md,
// as users configure it: the generated x-request-id comes back; a route
// may disable it.
func TestHeaderEchoExample(t *testing.T) {
	up := testutil.StartUpstream(t)
	echo := `          - name: strait.examples.header_echo
            typed_config: { "@type": type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/strait.examples.HeaderEcho, value: { headers: [x-request-id, x-user] } }
`
	p := startProxy(t, filterBootstrap(up.Addr, echo, `              - match: { prefix: "/off" }
                route: { cluster: backend }
                typed_per_filter_config:
                  strait.examples.header_echo: { "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true }
              - match: { prefix: "/" }
                route: { cluster: backend }
`))
	resp, body := doReq(t, "GET", p.url("in")+"/x", "", "x-user", "ann")
	if body != "ok /x" || len(resp.Header.Get("x-echo-x-request-id")) != 36 || resp.Header.Get("x-echo-x-user") != "ann" {
		t.Fatalf("%q %v", body, resp.Header)
	}
	if resp, _ := doReq(t, "GET", p.url("in")+"/off", "", "x-user", "ann"); resp.Header.Get("x-echo-x-user") != "" {
		t.Fatalf("disabled on the route: %v", resp.Header)
	}
}

// TestFilterEdges: two buffering filters in a row, a chunked body with
// trailers through them, the route cache cleared from an encoder (the
// route stays), and per-route config found by the name the filter has
// in http_filters.
func TestFilterEdges(t *testing.T) {
	up := testutil.StartUpstream(t)
	routes := `              - match: { prefix: "/named" }
                route: { cluster: backend }
                typed_per_filter_config:
                  my-probe: { "@type": type.googleapis.com/xds.type.v3.TypedStruct, type_url: type.googleapis.com/strait.test.ProbeRoute, value: { tag: by-name } }
              - match: { prefix: "/" }
                route: { cluster: backend }
`
	p := startProxy(t, filterBootstrap(up.Addr, namedProbe("my-probe", "a", "whole: true, clear: true")+probeFilter("b", "whole: true"), routes))
	resp, body := doReq(t, "POST", p.url("in")+"/echo", "abc")
	if body != "5:3:abc" { // a prefixes 3, b then 5
		t.Fatalf("two buffering filters: %q", body)
	}
	if strings.Join(resp.Header.Values("x-seen"), ",") != "b,a" {
		t.Fatalf("headers %v", resp.Header) // (a cleared the route cache in its encoder: nothing broke)
	}
	resp, _ = doReq(t, "GET", p.url("in")+"/named", "")
	if resp.Header.Get("x-per-route-a") != "by-name" || resp.Header.Get("x-per-route-b") != "" {
		t.Fatalf("per-route by configured name: %v", resp.Header)
	}
	// A chunked body with trailers: the kept bytes pass the filters after
	// the buffering one (here, none change them), then the trailers.
	c, err := net.Dial("tcp", p.addr("in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /trailers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: x-req\r\n\r\n3\r\nxyz\r\n0\r\nx-req: tail\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, _ := io.ReadAtLeast(c, buf, 1)
	got := string(buf[:n])
	for len(got) < 4096 && !strings.Contains(got, "0\r\n") {
		m, err := c.Read(buf)
		if err != nil {
			break
		}
		got += string(buf[:m])
	}
	if !strings.Contains(got, "200 OK") || !strings.Contains(got, "xyz") {
		t.Fatalf("trailers: %q", got)
	}
}

// TestFaultDelayThenAbort: a short delay with an abort aborts every time
// (the abort is decided before the delay and made after it).
func TestFaultDelayThenAbort(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, filterBootstrap(up.Addr, faultFilter(`delay: { header_delay: {}, percentage: { numerator: 100 } }, abort: { header_abort: {}, percentage: { numerator: 100 } }`), allRoutes))
	for i := 0; i < 50; i++ {
		resp, _ := doReq(t, "GET", p.url("in")+"/x", "", "x-envoy-fault-delay-request", "1", "x-envoy-fault-abort-request", "503")
		if resp.StatusCode != 503 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if resp, _ := doReq(t, "GET", p.url("in")+"/x", "", "x-envoy-fault-abort-request", "abc"); resp.StatusCode != 200 {
		t.Fatalf("an invalid abort header aborted: %d", resp.StatusCode)
	}
}

// TestFilterParkTimeout: a request a filter holds past the connection
// manager's request_timeout gets 408; the filter hears OnDestroy.
func TestFilterParkTimeout(t *testing.T) {
	up := testutil.StartUpstream(t)
	y := strings.Replace(filterBootstrap(up.Addr, probeFilter("a"), allRoutes), "          stat_prefix: in\n", "          stat_prefix: in\n          request_timeout: 0.3s\n", 1)
	p := startProxy(t, y)
	before := probeDestroyed.Load()
	start := time.Now()
	resp, body := doReq(t, "GET", p.url("in")+"/held", "", "x-delay-a", "10000")
	if el := time.Since(start); resp.StatusCode != 408 || el < 250*time.Millisecond || el > 3*time.Second {
		t.Fatalf("%d %q after %v", resp.StatusCode, body, el)
	}
	testutil.Eventually(t, 2*time.Second, "OnDestroy", func() bool { return probeDestroyed.Load() > before })
	if up.Started.Load() != 0 {
		t.Fatal("the held request reached the upstream")
	}
}

// TestStreamInfo: what the stream info tells a filter by the end of the
// stream: route, cluster, upstream host, when it went upstream, and the
// body bytes each way.
func TestStreamInfo(t *testing.T) {
	up := testutil.StartUpstream(t)
	routes := `              - name: echo-route
                match: { prefix: "/" }
                route: { cluster: backend }
`
	p := startProxy(t, filterBootstrap(up.Addr, probeFilter("info"), routes))
	before := probeDestroyed.Load()
	body := strings.Repeat("b", 1000)
	resp, got := doReq(t, "POST", p.url("in")+"/echo", body)
	if resp.StatusCode != 200 || got != body {
		t.Fatalf("%d, %d bytes", resp.StatusCode, len(got))
	}
	testutil.Eventually(t, 5*time.Second, "the stream to end", func() bool { return probeDestroyed.Load() > before })
	si := probeInfo.Load()
	if si.RouteName != "echo-route" || si.ClusterName != "backend" || si.UpstreamHost != up.Addr {
		t.Errorf("route %q cluster %q upstream %q", si.RouteName, si.ClusterName, si.UpstreamHost)
	}
	if si.BytesReceived != 1000 || si.BytesSent != 1000 {
		t.Errorf("bytes received %d, sent %d; want 1000 each", si.BytesReceived, si.BytesSent)
	}
	if si.UpstreamStart.Before(si.StartTime) || time.Since(si.UpstreamStart) > 5*time.Second {
		t.Errorf("upstream start %v, stream start %v", si.UpstreamStart, si.StartTime)
	}
}
