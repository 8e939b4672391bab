package test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

func TestHTTPMethodsAndBodies(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	base := p.url("ingress")

	t.Run("get", func(t *testing.T) {
		code, body := get(t, base+"/hello?x=1")
		if code != 200 || body != "ok /hello?x=1" {
			t.Fatalf("got %d %q", code, body)
		}
	})
	t.Run("post content-length", func(t *testing.T) {
		resp, err := http.Post(base+"/echo", "text/plain", strings.NewReader("hello body"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello body" || resp.Header.Get("x-got-len") != "10" {
			t.Fatalf("echo got %q len %s", b, resp.Header.Get("x-got-len"))
		}
	})
	t.Run("post chunked", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789"), 100000) // 1 MB
		req, _ := http.NewRequest("POST", base+"/echo", io.NopCloser(bytes.NewReader(payload)))
		req.ContentLength = -1 // forces chunked
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(b, payload) {
			t.Fatalf("echo of chunked body: got %d bytes, want %d", len(b), len(payload))
		}
	})
	t.Run("chunked response", func(t *testing.T) {
		resp, err := http.Get(base + "/chunked/300000")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(b) != 300000 || len(resp.TransferEncoding) == 0 {
			t.Fatalf("got %d bytes, transfer-encoding %v", len(b), resp.TransferEncoding)
		}
	})
	t.Run("head", func(t *testing.T) {
		resp, err := http.Head(base + "/size/1234")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != 1234 {
			t.Fatalf("HEAD: %d, content-length %d", resp.StatusCode, resp.ContentLength)
		}
	})
	t.Run("keep-alive reuses the connection", func(t *testing.T) {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		reused := 0
		for i := 0; i < 5; i++ {
			trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
				if ci.Reused {
					reused++
				}
			}}
			req, _ := http.NewRequest("GET", base+"/k", nil)
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if reused != 4 {
			t.Fatalf("reused %d of 4 possible", reused)
		}
	})
	t.Run("expect 100-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", p.addr("ingress"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, _ := br.ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("first line %q, want 100 Continue", line)
		}
		br.ReadString('\n')
		io.WriteString(c, "hello")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "hello" {
			t.Fatalf("body %q", b)
		}
	})
	t.Run("hop-by-hop headers are not forwarded", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/headers", nil)
		req.Header.Set("Connection", "X-Secret, keep-alive")
		req.Header.Set("X-Secret", "1")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("X-Kept", "yes")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(b)
		if strings.Contains(got, "X-Secret") || strings.Contains(got, "Keep-Alive") || !strings.Contains(got, "X-Kept: yes") {
			t.Fatalf("upstream saw:\n%s", got)
		}
		if !strings.Contains(got, "X-Request-Id:") || !strings.Contains(got, "X-Forwarded-Proto: http") {
			t.Fatalf("missing x-request-id or x-forwarded-proto:\n%s", got)
		}
	})
}

func TestPipelining(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	c, err := net.Dial("tcp", p.addr("ingress"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reqs strings.Builder
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&reqs, "GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	reqs.WriteString("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	reqs.WriteString("GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if _, err := io.WriteString(c, reqs.String()); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	want := []string{}
	for i := 0; i < 10; i++ {
		want = append(want, fmt.Sprintf("ok /p%d", i))
	}
	want = append(want, "abc", "ok /last")
	for i, w := range want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != w {
			t.Fatalf("response %d: %q, want %q", i, b, w)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed after Connection: close: %v", err)
	}
}

// TestSmuggling sends the classic desync requests. Each must get a 400 and
// a closed connection, and nothing hidden in it may reach the upstream.
func TestSmuggling(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	// forwarded marks requests whose head is valid, so that it may be
	// forwarded before the bad body is found; the upstream then sees one
	// aborted request, never a second one.
	type tcase struct {
		name, req string
		forwarded bool
	}
	cases := []tcase{
		{"CL.TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"TE.CL", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n", false},
		{"TE.TE xchunked", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", false},
		{"TE.TE space before colon", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"TE.TE two fields", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"TE.TE list", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", false},
		{"TE obs-fold", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", false},
		{"duplicate CL same", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", false},
		{"duplicate CL differ", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"CL list", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", false},
		{"bad chunk size", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"bare LF", "GET /a HTTP/1.1\nHost: x\n\n", false},
		{"bare CR", "GET /a HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", false},
		{"missing host", "GET /a HTTP/1.1\r\n\r\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := up.Started.Load()
			out, closed := rawExchange(t, p.addr("ingress"), tc.req)
			if !strings.HasPrefix(out, "HTTP/1.1 400") && !strings.HasPrefix(out, "HTTP/1.1 501") {
				t.Fatalf("reply %q, want 400 (or 501 for an unknown coding)", out)
			}
			if strings.Count(out, "HTTP/1.1 ") != 1 {
				t.Fatalf("more than one response: %q", out)
			}
			if !closed {
				t.Fatal("connection left open")
			}
			if got := up.Started.Load() - before; got > 1 || got == 1 && !tc.forwarded {
				t.Fatalf("upstream saw %d requests (paths %v)", got, up.Paths())
			}
		})
	}
	for _, path := range up.Paths() {
		if strings.Contains(path, "smuggled") {
			t.Fatalf("a smuggled request reached the upstream: %v", up.Paths())
		}
	}
}

func TestHeaderLimits(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	var many strings.Builder
	for i := 0; i < 101; i++ {
		fmt.Fprintf(&many, "X-H%d: v\r\n", i)
	}
	out, closed := rawExchange(t, p.addr("ingress"), "GET / HTTP/1.1\r\nHost: x\r\n"+many.String()+"\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 431") || !closed {
		t.Fatalf("101 headers: %q closed=%v", out, closed)
	}
	big := strings.Repeat("a", 61<<10)
	out, _ = rawExchange(t, p.addr("ingress"), "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+big+"\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 431") {
		t.Fatalf("61 KiB header: %.60q", out)
	}
}

func TestConcurrentConnections(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", p.addr("ingress"))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns[i] = c
		defer c.Close()
	}
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			fmt.Fprintf(c, "GET /c%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			if want := "ok /c" + strconv.Itoa(i); string(b) != want {
				errs <- fmt.Errorf("conn %d got %q", i, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p.settle()
	if got := p.stat("http.ingress.downstream_rq_2xx"); got != n {
		t.Fatalf("downstream_rq_2xx = %d, want %d", got, n)
	}
}

// TestEarlyAnswersAndEmptyBodies covers requests answered before their
// body was read, and bodies of length zero: each gets its answer and the
// connection then either serves the next request or closes; none hangs.
func TestEarlyAnswersAndEmptyBodies(t *testing.T) {
	up := testutil.StartUpstream(t)
	routes := `              - match: { prefix: "/known" }
                route: { cluster: backend }`
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{routes: routes}, ""))
	addr := p.addr("ingress")

	t.Run("content-length 0 alone", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "POST /known/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer to an empty POST: %v", err)
		}
		resp.Body.Close()
	})
	t.Run("large body to a missing route", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			io.WriteString(c, "POST /missing HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
			c.Write(make([]byte, 1<<20))
		}()
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 404 {
			t.Fatalf("got %v %v", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		// Closing with unread bytes makes the kernel reset: either ending
		// is fine; hanging until the deadline is not.
		if _, err := io.Copy(io.Discard, br); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection not closed after an early answer to a large body: %v", err)
		}
	})
	t.Run("bad chunk to a missing route", func(t *testing.T) {
		out, closed := rawExchange(t, addr, "POST /missing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
		if !closed || !(strings.HasPrefix(out, "HTTP/1.1 404") || strings.HasPrefix(out, "HTTP/1.1 400")) {
			t.Fatalf("got %q closed=%v", out, closed)
		}
	})
	t.Run("small body to a missing route keeps the connection", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "POST /missing HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /known/next HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		for _, want := range []int{404, 200} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != want {
				t.Fatalf("want %d, got %v %v", want, resp, err)
			}
			io.Copy(io.Discard, resp.Body)
		}
	})
}
