package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"golang.org/x/net/http2"
)

// h2cClient speaks HTTP/2 with prior knowledge, as gRPC clients do, on
// one connection (x/net's Transport: net/http's own h2c client can wait
// forever for a stream slot when StrictMaxConcurrentRequests is set).
func h2cClient() *http.Client {
	tr := &http2.Transport{
		AllowHTTP:                  true,
		StrictMaxConcurrentStreams: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// h1Client speaks HTTP/1.1 only.
func h1Client() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(true)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

const codecHTTP2 = "          codec_type: HTTP2"

// TestH2Spec runs the h2spec conformance suite (all 145 cases) against an
// HTTP/2 listener proxying to an HTTP/1.1 upstream.
func TestH2Spec(t *testing.T) {
	h2spec := tool(t, "h2spec")
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{hcmOpts: codecHTTP2}, ""))
	host, port, _ := net.SplitHostPort(p.addr("ingress"))
	out, err := exec.Command(h2spec, "-h", host, "-p", port, "-P", "/h2spec", "-o", "3").CombinedOutput()
	summary := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindStringSubmatch(string(out))
	if summary == nil {
		t.Fatalf("h2spec: %v\n%s", err, out)
	}
	if summary[1] != "145" || summary[2] != "145" {
		i := strings.Index(string(out), "Failures:")
		t.Fatalf("h2spec: %s\n%s", summary[0], string(out)[max(i, 0):])
	}
}

// TestH2ToH1 drives an HTTP/2 client through the proxy to an HTTP/1.1
// upstream: methods, streamed bodies both ways, trailers and many
// concurrent streams on one connection.
func TestH2ToH1(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	base := p.url("ingress")
	c := h2cClient()

	resp, err := c.Get(base + "/proto")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "HTTP/1.1" {
		t.Fatalf("downstream %s, upstream saw %q", resp.Proto, b)
	}

	for _, m := range []string{"PUT", "DELETE", "PATCH", "OPTIONS"} {
		req, _ := http.NewRequest(m, base+"/m", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok /m" {
			t.Fatalf("%s: %q", m, b)
		}
	}
	resp, err = c.Head(base + "/size/1000")
	if err != nil || resp.ContentLength != 1000 {
		t.Fatalf("HEAD: %v %v", err, resp)
	}
	resp.Body.Close()

	// An 8 MiB body of unknown length: DATA frames become a chunked upload.
	checkEcho(t, c, base, 8<<20)
	// Trailers both ways: HTTP/2 trailers become chunked trailers upstream
	// and back.
	checkTrailers(t, c, base)

	// 100 concurrent streams (the proxy's limit) over the client's one
	// connection, three requests each. (More goroutines than the limit
	// deadlock x/net's client on its own stream reservations.)
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 3 {
				size := 1000 + i*3 + j
				resp, err := c.Get(fmt.Sprintf("%s/size/%d", base, size))
				if err != nil {
					errs <- err
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n != int64(size) {
					errs <- fmt.Errorf("stream %d: %d bytes", size, n)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := p.stat("http.ingress.downstream_cx_total"); n != 1 {
		t.Fatalf("%d downstream connections, want 1 (multiplexed)", n)
	}
}

// checkEcho streams size random bytes of unknown length to /echo and
// checks that they come back unchanged.
func checkEcho(t *testing.T, c *http.Client, base string, size int) {
	t.Helper()
	body := make([]byte, size)
	rand.Read(body)
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(body); off += 64 << 10 {
			pw.Write(body[off:min(off+64<<10, len(body))])
		}
		pw.Close()
	}()
	resp, err := c.Post(base+"/echo", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("%s echo: %v, %d of %d bytes back", resp.Proto, err, len(got), len(body))
	}
}

// checkTrailers sends a request trailer to /trailers and checks the
// response trailers that answer it.
func checkTrailers(t *testing.T, c *http.Client, base string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/trailers", io.NopCloser(strings.NewReader("with trailers")))
	req.Trailer = http.Header{"X-Req": {"req-trailer-value"}}
	req.ContentLength = -1
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "with trailers" || resp.Trailer.Get("x-echo") != "req-trailer-value" || resp.Trailer.Get("grpc-status") != "0" {
		t.Fatalf("%s trailers: body %q trailer %v", resp.Proto, got, resp.Trailer)
	}
}

// TestProtocolDetection serves HTTP/1.1 and HTTP/2 clients on one AUTO
// listener.
func TestProtocolDetection(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	for _, c := range []*http.Client{h1Client(), h2cClient()} {
		resp, err := c.Get(p.url("ingress") + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok /x" {
			t.Fatalf("%s: %q", resp.Proto, b)
		}
	}
	// An HTTP/1.1 request asking to upgrade to h2c is served as HTTP/1.1,
	// as Envoy and HAProxy do (RFC 9113 deprecates the h2c upgrade); the
	// upgrade fields do not reach the upstream.
	out, _ := rawExchange(t, p.addr("ingress"), "GET /headers HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
		"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200") || strings.Contains(strings.ToLower(out), "http2-settings") || strings.Contains(strings.ToLower(out), "upgrade:") {
		t.Fatalf("h2c upgrade request: %q", out)
	}
	// Garbage is answered as HTTP/1.1 would answer it.
	out, closed := rawExchange(t, p.addr("ingress"), "PRX * HTTP/2.0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 505") || !closed {
		t.Fatalf("garbage: %q closed=%v", out, closed)
	}
}

// TestH2Drain: SIGTERM-style drain sends GOAWAY; the stream in flight
// completes.
func TestH2Drain(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	c := h2cClient()
	done := make(chan string, 1)
	go func() {
		resp, err := c.Get(p.url("ingress") + "/slow/500")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(b)
	}()
	testutil.Eventually(t, 5*time.Second, "request in flight", func() bool { return up.Started.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.srv.Shutdown(ctx)
	if got := <-done; got != "slow" {
		t.Fatalf("in-flight stream during drain: %q", got)
	}
}

// h2Upstream is the cluster option for HTTP/2 (prior knowledge) upstreams.
const h2Upstream = `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }`

// TestToH2Upstream drives HTTP/1.1 and HTTP/2 clients through the proxy
// to an HTTP/2 upstream: every request goes over few multiplexed
// connections, bodies and trailers cross in both directions.
func TestToH2Upstream(t *testing.T) {
	up := testutil.StartUpstreamH2C(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, h2Upstream))
	base := p.url("ingress")
	for _, c := range []*http.Client{h1Client(), h2cClient()} {
		resp, err := c.Get(base + "/proto")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "HTTP/2.0" {
			t.Fatalf("%s client: upstream saw %q", resp.Proto, b)
		}

		checkEcho(t, c, base, 3<<20+17)
		checkTrailers(t, c, base)
	}

	// Many concurrent HTTP/1.1 clients share few upstream connections.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := h1Client()
			for j := range 5 {
				resp, err := c.Get(fmt.Sprintf("%s/size/%d", base, 100*i+j))
				if err != nil {
					errs <- err
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if n != int64(100*i+j) {
					errs <- fmt.Errorf("%d bytes", n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := p.stat("cluster.backend.upstream_cx_total"); n > 2 {
		t.Fatalf("%d upstream connections for 64 concurrent clients, want 1 or 2 (multiplexed)", n)
	}
}
