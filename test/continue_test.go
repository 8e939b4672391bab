package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// continueUpstream answers /echo with the length of the body it reads (Go's
// server sends 100 Continue when the handler reads the body) and /deny with
// 401 without reading it; expects reports the Expect field each request
// carried.
func continueUpstream(t *testing.T, h2c bool) (addr string, expects chan string) {
	expects = make(chan string, 16)
	addr = serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		expects <- r.Header.Get("Expect")
		if r.URL.Path == "/deny" {
			w.WriteHeader(401)
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d", len(b))
	}, h2c)
	return addr, expects
}

// expectExchange sends an HTTP/1.1 POST with Expect: 100-continue, sends
// the body only after a 100 Continue, and returns whether one came before
// the final answer, the answer, and how long the client waited for the
// first answer.
func expectExchange(t *testing.T, addr, path, body string) (continued bool, resp *http.Response, respBody string, waited time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", path, len(body))
	br := bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: first answer: %v", path, err)
	}
	waited = time.Since(start)
	if resp.StatusCode == 100 {
		continued = true
		io.WriteString(c, body)
		if resp, err = http.ReadResponse(br, nil); err != nil {
			t.Fatalf("%s: final answer: %v", path, err)
		}
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: body: %v", path, err)
	}
	return continued, resp, string(b), waited
}

// TestProxy100Continue: with proxy_100_continue the client's Expect goes
// upstream and the 100 Continue it gets is the upstream's (relayed at
// once, towards HTTP/1.1 and HTTP/2 upstreams); an upstream that answers
// without it gets no body and the client its answer, with the connection
// closed. Without the option (Envoy's default) the proxy answers 100
// Continue itself and removes Expect.
func TestProxy100Continue(t *testing.T) {
	body := strings.Repeat("b", 3000)
	for _, up := range []struct {
		name, clusterOpts string
		h2c               bool
	}{{"http1 upstream", "", false}, {"h2c upstream", "    http2_protocol_options: {}", true}} {
		t.Run(up.name, func(t *testing.T) {
			addr, expects := continueUpstream(t, up.h2c)
			p := startProxy(t, httpBootstrap(addr, routeCfg{hcmOpts: "          proxy_100_continue: true"}, up.clusterOpts))
			proxied := strings.TrimPrefix(p.url("ingress"), "http://")
			continued, resp, got, waited := expectExchange(t, proxied, "/echo", body)
			if !continued || resp.StatusCode != 200 || got != strconv.Itoa(len(body)) {
				t.Fatalf("/echo: continued %v, %d %q", continued, resp.StatusCode, got)
			}
			if waited > 900*time.Millisecond {
				t.Fatalf("100 Continue took %v: not relayed as it came", waited)
			}
			// (Go's HTTP/2 server takes Expect out of the request it hands
			// on; the 100 Continue it sent is what shows it came.)
			if e := <-expects; e != "100-continue" && !up.h2c {
				t.Fatalf("the upstream saw Expect %q", e)
			}
			continued, resp, _, _ = expectExchange(t, proxied, "/deny", body)
			if continued || resp.StatusCode != 401 {
				t.Fatalf("/deny: continued %v, status %d; want the upstream's 401 alone", continued, resp.StatusCode)
			}
			if !up.h2c && !resp.Close {
				t.Fatal("/deny: the connection stays open while the client may still send a body")
			}
			<-expects
		})
	}
	for _, up := range []struct {
		name, clusterOpts string
		h2c               bool
	}{{"default, http1 upstream", "", false}, {"default, h2c upstream", "    http2_protocol_options: {}", true}} {
		t.Run(up.name, func(t *testing.T) {
			addr, expects := continueUpstream(t, up.h2c)
			p := startProxy(t, httpBootstrap(addr, routeCfg{}, up.clusterOpts))
			proxied := strings.TrimPrefix(p.url("ingress"), "http://")
			continued, resp, got, _ := expectExchange(t, proxied, "/echo", body)
			if !continued || resp.StatusCode != 200 || got != strconv.Itoa(len(body)) {
				t.Fatalf("/echo: continued %v, %d %q", continued, resp.StatusCode, got)
			}
			if e := <-expects; e != "" {
				t.Fatalf("the upstream saw Expect %q; Envoy removes it", e)
			}
			continued, resp, _, _ = expectExchange(t, proxied, "/deny", body)
			if !continued || resp.StatusCode != 401 {
				t.Fatalf("/deny: continued %v, status %d; want the proxy's 100 Continue, then 401", continued, resp.StatusCode)
			}
			<-expects
		})
	}
}

// TestProxy100ContinueHTTP2Client: curl over HTTP/2 waits for 100 Continue
// (for 20 s here) before it sends the body; the proxy relays the
// upstream's, or answers it itself by default.
func TestProxy100ContinueHTTP2Client(t *testing.T) {
	curl := tool(t, "curl")
	addr, expects := continueUpstream(t, false)
	for _, tc := range []struct {
		name, hcm, expect string
	}{{"proxied", "          proxy_100_continue: true", "100-continue"}, {"default", "", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, httpBootstrap(addr, routeCfg{hcmOpts: tc.hcm}, ""))
			cmd := exec.Command(curl, "-sS", "--max-time", "15", "--http2-prior-knowledge", "--expect100-timeout", "20",
				"-H", "Expect: 100-continue", "--data-binary", strings.Repeat("c", 2000), "-w", " %{http_code} %{time_total}", p.url("ingress")+"/echo")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			f := strings.Fields(string(out))
			if len(f) != 3 || f[0] != "2000" || f[1] != "200" {
				t.Fatalf("curl: %q", out)
			}
			if secs, _ := strconv.ParseFloat(f[2], 64); secs > 5 {
				t.Fatalf("the request took %s s: curl waited out its 100 Continue", f[2])
			}
			if e := <-expects; e != tc.expect {
				t.Fatalf("the upstream saw Expect %q, want %q", e, tc.expect)
			}
		})
	}
}

// TestProxy100ContinueSilentUpstream: an HTTP/1.1 upstream that never
// sends 100 Continue (it reads the body regardless): the proxy waits for it
// a second, then answers 100 Continue itself so the client sends the body.
func TestProxy100ContinueSilentUpstream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(req.Body)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(strconv.Itoa(len(b))), len(b))
				}
			}()
		}
	}()
	p := startProxy(t, httpBootstrap(ln.Addr().String(), routeCfg{hcmOpts: "          proxy_100_continue: true"}, ""))
	continued, resp, got, waited := expectExchange(t, strings.TrimPrefix(p.url("ingress"), "http://"), "/", "hello")
	if !continued || resp.StatusCode != 200 || got != "5" {
		t.Fatalf("continued %v, %d %q", continued, resp.StatusCode, got)
	}
	if waited < 900*time.Millisecond || waited > 3*time.Second {
		t.Fatalf("the proxy's own 100 Continue came after %v; want about a second", waited)
	}
}
