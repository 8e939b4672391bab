package test

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// lineUpstream is an HTTP/1.1 upstream on a raw socket that records each
// request's head as it arrived (request line first) and answers 200 "ok".
type lineUpstream struct {
	addr  string
	mu    sync.Mutex
	heads []string
}

func startLineUpstream(t *testing.T) *lineUpstream {
	u := &lineUpstream{}
	u.addr = testutil.StartTCP(t, u.serve)
	return u
}

func (u *lineUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		u.mu.Lock()
		u.heads = append(u.heads, head.String())
		u.mu.Unlock()
		if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")); err != nil {
			return
		}
	}
}

func (u *lineUpstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.heads...)
}

// rawHTTPUpstream serves HTTP/1.1 by hand on a raw socket: answer is
// called for each request read and writes what it likes; it returns false
// to close the connection (without reading the body).
func rawHTTPUpstream(t *testing.T, answer func(c net.Conn, req *http.Request) bool) string {
	return testutil.StartTCP(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil || !answer(c, req) {
				return
			}
		}
	})
}

// outcome reads frames until stream id is answered: ":status" of its
// response, or "RST_STREAM <code>".
func (r *h2Raw) outcome(id uint32) string {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "RST_STREAM " + f.ErrCode.String()
			}
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.HeadersFrame:
			fields, err := r.dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				r.t.Fatal(err)
			}
			if f.StreamID != id {
				continue
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					return hf.Value
				}
			}
		}
	}
}

// TestH2RequestValidation (issue 11, items 1 and 2): an HTTP/2 request
// whose :method is not a token, whose :authority or Host is not a host,
// or whose :path or :scheme is not what the HTTP/1.1 parser would take
// is refused with RST_STREAM PROTOCOL_ERROR and never reaches the
// upstream; the connection keeps serving.
func TestH2RequestValidation(t *testing.T) {
	up := startLineUpstream(t)
	p := startProxy(t, httpBootstrap(up.addr, routeCfg{}, ""))
	r := dialH2(t, p.addr("ingress"))
	field := func(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }
	send := func(id uint32, fields ...hpack.HeaderField) string {
		r.hbuf.Reset()
		for _, f := range fields {
			r.enc.WriteField(f)
		}
		if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		return r.outcome(id)
	}
	req := func(method, scheme, auth, path string, extra ...hpack.HeaderField) []hpack.HeaderField {
		return append([]hpack.HeaderField{field(":method", method), field(":scheme", scheme), field(":authority", auth), field(":path", path)}, extra...)
	}
	cases := []struct {
		name   string
		fields []hpack.HeaderField
	}{
		{"method with a request line", req("GET /admin HTTP/1.1", "http", "test", "/public")},
		{"method with a space", req("GE T", "http", "test", "/")},
		{"empty method", req("", "http", "test", "/")},
		{"authority with a space", req("GET", "http", "a b", "/")},
		{"authority with a path", req("GET", "http", "evil/x", "/")},
		{"authority with userinfo", req("GET", "http", "u@evil", "/")},
		{"host with a space", append(req("GET", "http", "test", "/")[:2], field(":path", "/"), field("host", "a b"))},
		{"path with a fragment", req("GET", "http", "test", "/x#frag")},
		{"path with a space", req("GET", "http", "test", "/x y")},
		{"path with 0xff", req("GET", "http", "test", "/x\xff")},
		{"path not origin-form", req("GET", "http", "test", "x")},
		{"asterisk without OPTIONS", req("GET", "http", "test", "*")},
		{"scheme with a space", req("GET", "ht tp", "test", "/")},
		{"CONNECT to a host without a port", []hpack.HeaderField{field(":method", "CONNECT"), field(":authority", "evil/x")}},
	}
	id := uint32(1)
	for _, c := range cases {
		if got := send(id, c.fields...); got != "RST_STREAM PROTOCOL_ERROR" {
			t.Errorf("%s: %s, want RST_STREAM PROTOCOL_ERROR", c.name, got)
		}
		id += 2
	}
	if got := send(id, req("GET", "http", "test", "/ok?a=%20")...); got != "200" {
		t.Fatalf("a good request after the bad ones: %s", got)
	}
	heads := up.received()
	if len(heads) != 1 || !strings.HasPrefix(heads[0], "GET /ok?a=%20 HTTP/1.1\r\n") {
		t.Fatalf("the upstream received %q, want only the good request", heads)
	}
}

// slowUpstream answers /slow only when the proxy gives up on the request
// (or after 30 s) and anything else at once; inflight counts /slow
// requests it holds.
func slowUpstream(t *testing.T) (addr string, inflight *atomic.Int64) {
	inflight = new(atomic.Int64)
	addr = serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			io.WriteString(w, "fast")
			return
		}
		inflight.Add(1)
		defer inflight.Add(-1)
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	}, true)
	return addr, inflight
}

// waitStat polls a stat until ok or d passes; it returns the last value.
func waitStat(p *proxy, name string, d time.Duration, ok func(int64) bool) (int64, bool) {
	end := time.Now().Add(d)
	for {
		v := p.stat(name)
		if ok(v) {
			return v, true
		}
		if time.Now().After(end) {
			return v, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAbandonedRequestsCancelUpstream (issue 11, item 3): clients that
// leave while their requests wait for a slow upstream's headers (route
// timeout 0s: no bound) cancel the upstream requests at once: HTTP/1.1
// clients closing or resetting 1,100 connections leave
// upstream_rq_active at 0 within a second and max_requests free for
// others; HTTP/2 clients resetting their streams or closing the
// connection do the same.
func TestAbandonedRequestsCancelUpstream(t *testing.T) {
	up, inflight := slowUpstream(t)
	p := startProxy(t, httpBootstrap(up, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0s }`}, ""))
	const active = "cluster.backend.upstream_rq_active"
	addr := p.addr("ingress")

	const n = 1100
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if v, ok := waitStat(p, active, 15*time.Second, func(v int64) bool { return v >= 1024 }); !ok {
		t.Fatalf("%s = %d, want the 1,024 of max_requests busy", active, v)
	}
	for i, c := range conns {
		if i%2 == 0 {
			c.(*net.TCPConn).SetLinger(0) // a reset
		}
		c.Close()
	}
	start := time.Now()
	if v, ok := waitStat(p, active, time.Second, func(v int64) bool { return v == 0 }); !ok {
		t.Fatalf("%s = %d a second after the clients left, want 0", active, v)
	}
	t.Logf("HTTP/1.1: upstream_rq_active 0 %v after %d clients left", time.Since(start), n)
	if code, body := get(t, p.url("ingress")+"/fast"); code != 200 || body != "fast" {
		t.Fatalf("another client: %d %q", code, body)
	}
	testutil.Eventually(t, 5*time.Second, "the upstream to see the cancels", func() bool { return inflight.Load() == 0 })

	// HTTP/2: streams reset by the client, then a connection closed.
	for _, how := range []string{"RST_STREAM", "close"} {
		r := dialH2(t, addr)
		const streams = 50
		for i := range streams {
			id := uint32(2*i + 1)
			if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block("/slow"), EndStream: true, EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
		}
		go io.Copy(io.Discard, r.c) // frames we do not look at
		if v, ok := waitStat(p, active, 5*time.Second, func(v int64) bool { return v == streams }); !ok {
			t.Fatalf("%s: %s = %d, want %d", how, active, v, streams)
		}
		if how == "RST_STREAM" {
			for i := range streams {
				r.fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel)
			}
		} else {
			r.c.Close()
		}
		if v, ok := waitStat(p, active, time.Second, func(v int64) bool { return v == 0 }); !ok {
			t.Fatalf("HTTP/2 %s: %s = %d a second later, want 0", how, active, v)
		}
		r.c.Close()
	}
	if p.stat("cluster.backend.upstream_rq_tx_reset") < n/2 {
		t.Fatalf("upstream_rq_tx_reset = %d", p.stat("cluster.backend.upstream_rq_tx_reset"))
	}
}

// TestHTTP10KeepAlive (issue 11, item 12): an HTTP/1.0 client that asks
// for keep-alive keeps its connection (the answer says so), request after
// request; one that does not ask gets its connection closed.
func TestHTTP10KeepAlive(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	c, err := net.Dial("tcp", p.addr("ingress"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i := range 3 {
		if _, err := io.WriteString(c, "GET /ka HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok /ka" || !strings.EqualFold(resp.Header.Get("Connection"), "keep-alive") {
			t.Fatalf("response %d: %d %q connection=%q", i, resp.StatusCode, b, resp.Header.Get("Connection"))
		}
	}
	if got := p.stat("http.ingress.downstream_cx_total"); got != 1 {
		t.Fatalf("downstream_cx_total = %d, want 1", got)
	}
	out, closed := rawExchange(t, p.addr("ingress"), "GET /ka HTTP/1.0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !closed {
		t.Fatalf("HTTP/1.0 without keep-alive: %q closed=%v", out, closed)
	}
}

// TestRequestLineEdges (issue 11, item 13): HTTP/1.2 is served as 1.1;
// an HTTP/0.9 request line gets 400 and a closed connection at once; a
// request-target with a byte that is not UTF-8 is refused and never
// forwarded.
func TestRequestLineEdges(t *testing.T) {
	up := startLineUpstream(t)
	p := startProxy(t, httpBootstrap(up.addr, routeCfg{}, ""))
	out, _ := rawExchange(t, p.addr("ingress"), "GET /v12 HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("HTTP/1.2: %q", out)
	}
	start := time.Now()
	out, closed := rawExchange(t, p.addr("ingress"), "GET /\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 400") || !closed || time.Since(start) > 2*time.Second {
		t.Fatalf("HTTP/0.9: %q closed=%v after %v", out, closed, time.Since(start))
	}
	out, closed = rawExchange(t, p.addr("ingress"), "GET /x\xff HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 400") || !closed {
		t.Fatalf("0xff in the target: %q closed=%v", out, closed)
	}
	heads := up.received()
	if len(heads) != 1 || !strings.HasPrefix(heads[0], "GET /v12 HTTP/1.1\r\n") {
		t.Fatalf("the upstream received %q", heads)
	}
}

// TestConnectionNamedResponseFields (issue 11, item 14): fields the
// upstream's Connection header names are not relayed (RFC 9110 §7.6.1),
// to HTTP/1.1 and HTTP/2 clients.
func TestConnectionNamedResponseFields(t *testing.T) {
	addr := rawHTTPUpstream(t, func(c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: X-Secret, x-hop\r\nX-Secret: s\r\nX-Hop: h\r\nX-Other: o\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	p := startProxy(t, httpBootstrap(addr, routeCfg{}, ""))
	for name, c := range map[string]*http.Client{"HTTP/1.1": h1Client(), "HTTP/2": h2cClient()} {
		resp, err := c.Get(p.url("ingress") + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Header.Get("X-Secret") != "" || resp.Header.Get("X-Hop") != "" || resp.Header.Get("X-Other") != "o" {
			t.Fatalf("%s: relayed %v", name, resp.Header)
		}
	}
}

// TestSlowloris (issue 11, item 11): 300 connections trickling their
// request heads a byte at a time are answered 408 and closed once
// request_headers_timeout passes; a head that arrives in time, even in
// pieces, is served; the timeouts are counted.
func TestSlowloris(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{hcmOpts: "          request_headers_timeout: 0.5s"}, ""))
	addr := p.addr("ingress")
	const n = 300
	var wg sync.WaitGroup
	results := make(chan string, n)
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				results <- err.Error()
				return
			}
			defer c.Close()
			head := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 100) + "\r\n\r\n"
			done := make(chan string, 1)
			go func() {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				b, _ := io.ReadAll(c)
				done <- string(b)
			}()
			for i := 0; i < len(head); i++ {
				select {
				case out := <-done:
					results <- out
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := c.Write([]byte{head[i]}); err != nil {
					break
				}
			}
			results <- <-done
		}()
	}
	wg.Wait()
	close(results)
	for out := range results {
		if !strings.HasPrefix(out, "HTTP/1.1 408") {
			t.Fatalf("a trickling client got %q", out)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the trickling clients were answered after %v", d)
	}
	if got := p.stat("http.ingress.downstream_rq_header_timeout"); got != n {
		t.Fatalf("downstream_rq_header_timeout = %d, want %d", got, n)
	}
	// A head in three pieces within the timeout is served.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, piece := range []string{"GET /in-time HTTP/1.1\r\n", "Host: x\r\n", "Connection: close\r\n\r\n"} {
		io.WriteString(c, piece)
		time.Sleep(100 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") {
		t.Fatalf("a head in pieces: %q", b)
	}
}

// TestLingeringClose (issue 11, item 10): a client that sends its whole
// request (an 8 MiB header line: more than loopback's socket buffers
// hold) before it reads, as many clients do,
// reads the 431: the proxy closes its write side and drains the input
// for a while before it closes, instead of a close that resets the
// client's sending (and with it, for such a client, the answer).
func TestLingeringClose(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	big := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8<<20) + "\r\n\r\n"
	for i := range 5 {
		c, err := net.Dial("tcp", p.addr("ingress"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, big); err != nil {
			c.Close()
			t.Fatalf("attempt %d: sending the request: %v", i, err)
		}
		b, err := io.ReadAll(c)
		c.Close()
		if !strings.HasPrefix(string(b), "HTTP/1.1 431") {
			t.Fatalf("attempt %d: read %q, %v", i, b, err)
		}
	}
}

// countingListener counts the connections an upstream accepts.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestMaxConnectionsHardCap (issue 11, item 7): max_connections counts
// the connections being dialled: 300 clients at once on a cold host with
// a cap of 4 open at most 4 upstream connections, in 20 fresh proxies (5
// with -short), and every request is answered.
func TestMaxConnectionsHardCap(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	for round := range rounds {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cl := &countingListener{Listener: ln}
		var open, peak atomic.Int64
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			time.Sleep(time.Millisecond)
			io.WriteString(w, "ok")
		}), ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				n := open.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		}}
		go srv.Serve(cl)
		p := startProxy(t, httpBootstrap(ln.Addr().String(), routeCfg{},
			"    circuit_breakers: { thresholds: [ { max_connections: 4, max_pending_requests: 1000 } ] }"))
		url := p.url("ingress") + "/"
		var wg sync.WaitGroup
		var failed atomic.Int64
		for range 300 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
				resp, err := c.Get(url)
				if err != nil {
					failed.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		srv.Close()
		if n := peak.Load(); n > 4 {
			t.Fatalf("round %d: the upstream had %d connections open at once (%d in all), cap 4", round, n, cl.n.Load())
		}
		t.Logf("round %d: peak %d, accepted %d, upstream_cx_destroy %d", round, peak.Load(), cl.n.Load(), p.stat("cluster.backend.upstream_cx_destroy"))
		if f := failed.Load(); f > 0 {
			t.Fatalf("round %d: %d of 300 requests failed", round, f)
		}
	}
}

// closingUpstream answers every request, then closes the connection
// without saying so (no Connection: close), as some servers do.
func closingUpstream(t *testing.T) string {
	return rawHTTPUpstream(t, func(c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return false
	})
}

// TestStalePooledConnections (issue 11, item 5): an upstream that closes
// after every answer without Connection: close costs no GET: 8 clients
// sending GETs and POSTs over keep-alive get 200 for every GET (a GET
// that meets a dead pooled connection is retried on a probed one, and
// counted); a POST gets a probed connection, which the upstream can still
// close in the moment between the probe and the request (Go's client has
// the same window), so a few may fail; the closes are noticed (the pool
// holds no dead connection for long).
func TestStalePooledConnections(t *testing.T) {
	p := startProxy(t, httpBootstrap(closingUpstream(t), routeCfg{}, ""))
	url := p.url("ingress") + "/"
	var badGet, badPost atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
			for i := range 60 {
				var resp *http.Response
				var err error
				post := (i+w)%2 == 1
				if post {
					resp, err = c.Post(url, "text/plain", strings.NewReader("body"))
				} else {
					resp, err = c.Get(url)
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					if post {
						badPost.Add(1)
					} else {
						badGet.Add(1)
					}
				}
				if i%20 == 0 {
					time.Sleep(150 * time.Millisecond) // some find idle connections checked
				}
			}
		}()
	}
	wg.Wait()
	if n := badGet.Load(); n > 0 {
		t.Errorf("%d of 240 GETs failed", n)
	}
	if n := badPost.Load(); n > 12 {
		t.Errorf("%d of 240 POSTs failed", n)
	}
	t.Logf("failed POSTs: %d of 240", badPost.Load())
	testutil.Eventually(t, 3*time.Second, "the dead connections to leave the pool", func() bool {
		return p.stat("cluster.backend.upstream_cx_active") == 0
	})
	t.Logf("upstream_rq_stale_retry = %d", p.stat("cluster.backend.upstream_rq_stale_retry"))
}

// TestEarlyAnswerOnReusedConnection (issue 11, item 6): an upstream that
// answers an upload with 413 and Connection: close, and closes while the
// 10 MB body is still coming, has its 413 relayed, on a reused upstream
// connection as on a fresh one.
func TestEarlyAnswerOnReusedConnection(t *testing.T) {
	addr := rawHTTPUpstream(t, func(c net.Conn, req *http.Request) bool {
		if req.URL.Path == "/upload" {
			io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n")
			return false // closes with the body unread
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	p := startProxy(t, httpBootstrap(addr, routeCfg{}, ""))
	for _, reused := range []bool{false, true} {
		if reused {
			if code, _ := get(t, p.url("ingress")+"/small"); code != 200 {
				t.Fatalf("warm-up: %d", code)
			}
		}
		c, err := net.Dial("tcp", p.addr("ingress"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
			chunk := make([]byte, 64<<10)
			for i := 0; i < 160; i++ {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("reused=%v: %v", reused, err)
		}
		c.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("reused=%v: %d, want the upstream's 413", reused, resp.StatusCode)
		}
	}
}

// keepAliveClients runs n clients, each on its own connection sending
// requests one after another until an answer says Connection: close;
// any failure on an existing connection is counted. stop ends them early.
func keepAliveClients(addr string, n int, stop <-chan struct{}) (failures *atomic.Int64, done *sync.WaitGroup) {
	failures, done = new(atomic.Int64), new(sync.WaitGroup)
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				failures.Add(1)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, "GET /ka HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					failures.Add(1)
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					failures.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
				}
				if resp.Close {
					return
				}
				time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
			}
		}()
	}
	return failures, done
}

// TestSIGTERMKeepAliveClients (issue 11, item 9): SIGTERM with 20
// keep-alive clients sending (and pausing) costs none of them a request:
// each gets Connection: close on an answer and stops; the process exits 0.
func TestSIGTERMKeepAliveClients(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := runStrait(t, httpBootstrap(up.Addr, routeCfg{}, ""), 1, "--drain-time-s", "10")
	failures, done := keepAliveClients(p.addrs["ingress"], 20, nil)
	time.Sleep(300 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	done.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests failed on existing connections", n)
	}
	if code := p.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestDrainListenersEndpoint: POST /drain_listeners drains without a
// failed request and /ready says DRAINING; ?graceful keeps accepting for
// the drain time; ?inboundonly leaves other listeners alone.
func TestDrainListenersEndpoint(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	failures, done := keepAliveClients(p.addr("ingress"), 20, nil)
	time.Sleep(200 * time.Millisecond)
	resp, err := http.Post(p.admin()+"/drain_listeners?inboundonly", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _ := get(t, p.url("ingress")+"/still"); code != 200 {
		t.Fatalf("?inboundonly drained an outbound listener: %d", code)
	}
	resp, err = http.Post(p.admin()+"/drain_listeners", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	done.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests failed on existing connections", n)
	}
	if code, body := get(t, p.admin()+"/ready"); code != 503 || !strings.Contains(body, "DRAINING") {
		t.Fatalf("/ready: %d %q", code, body)
	}
	if _, err := net.DialTimeout("tcp", p.addr("ingress"), time.Second); err == nil {
		t.Fatal("still accepting after /drain_listeners")
	}
}

// TestStatsAfterHeaders (issue 11, item 8): an upstream that resets after
// its headers counts upstream_rq_rx_reset; a route timeout that cuts an
// answer under way counts upstream_rq_timeout.
func TestStatsAfterHeaders(t *testing.T) {
	addr := rawHTTPUpstream(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		if req.URL.Path == "/reset" {
			c.(*net.TCPConn).SetLinger(0)
			return false
		}
		time.Sleep(2 * time.Second) // /slow: the rest never comes in time
		return false
	})
	p := startProxy(t, httpBootstrap(addr, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0.5s }`}, ""))
	for _, path := range []string{"/reset", "/slow"} {
		resp, err := http.Get(p.url("ingress") + path)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	p.settle()
	if got := p.stat("cluster.backend.upstream_rq_rx_reset"); got != 1 {
		t.Errorf("upstream_rq_rx_reset = %d, want 1", got)
	}
	if got := p.stat("cluster.backend.upstream_rq_timeout"); got != 1 {
		t.Errorf("upstream_rq_timeout = %d, want 1", got)
	}
}

// TestH2StalledStreamsDoNotStarve (issue 11, item 4): HTTP/2 streams of
// a 1 MiB answer that their clients never read (no WINDOW_UPDATE) leave another client's request answered at
// once, towards HTTP/1.1 and HTTP/2 upstreams. Towards an HTTP/2
// upstream the stalled streams used to fill the shared upstream
// connection's window, and the other request waited for its route
// timeout (15 s): the client codec now credits the connection window as
// data arrives, so a stalled stream holds only its own stream window.
func TestH2StalledStreamsDoNotStarve(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	for _, h2up := range []bool{false, true} {
		addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/big" {
				io.WriteString(w, big)
				return
			}
			io.WriteString(w, "small")
		}, h2up)
		opts := ""
		if h2up {
			opts = `    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }`
		}
		p := startProxy(t, httpBootstrap(addr, routeCfg{}, opts))
		// 300 streams (3 connections) towards HTTP/1.1: 1,000 passed here
		// alone but took over 30 s to set up beside the rest of the unit
		// run on 2 cores.
		conns, streams := 3, 100
		if h2up {
			// Fewer than the upstream's stream limit (250), so that the
			// other request shares their upstream connection.
			conns, streams = 1, 50
		}
		for range conns {
			r := dialH2(t, p.addr("ingress"))
			for i := range streams {
				r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: r.block("/big"), EndStream: true, EndHeaders: true})
			}
		}
		testutil.Eventually(t, 30*time.Second, "the streams to stall", func() bool {
			return p.stat("http.ingress.downstream_rq_active") >= int64(conns*streams)
		})
		time.Sleep(200 * time.Millisecond) // the upstream sends what the windows allow
		start := time.Now()
		resp, err := h2cClient().Get(p.url("ingress") + "/small")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// The defect held it for the route timeout (15 s); under -race
		// (-short) with 300 stalled 1 MiB answers one took 3.4 s in CI.
		limit := 2 * time.Second
		if testing.Short() {
			limit = 6 * time.Second
		}
		if d := time.Since(start); d > limit || resp.StatusCode != 200 {
			t.Fatalf("h2 upstream=%v: another client's request: %d after %v (limit %v)", h2up, resp.StatusCode, d, limit)
		}
	}
}

// TestH2Slowloris: HTTP/2 clients trickling their preface or a HEADERS
// frame get GOAWAY and a closed connection once request_headers_timeout
// passes; a request that arrives in time is served.
func TestH2Slowloris(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{hcmOpts: "          request_headers_timeout: 0.5s"}, ""))
	addr := p.addr("ingress")
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"}, {Name: ":authority", Value: "x"}, {Name: ":path", Value: "/" + strings.Repeat("a", 200)}} {
		enc.WriteField(f)
	}
	var frames bytes.Buffer
	fr := http2.NewFramer(&frames, nil)
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	for name, trickle := range map[string][]byte{"preface": []byte(http2.ClientPreface), "headers": append([]byte(http2.ClientPreface), frames.Bytes()...)} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := len(http2.ClientPreface)
		if name == "preface" {
			start = 0
		}
		c.Write(trickle[:start])
		closed := make(chan struct{})
		go func() { io.Copy(io.Discard, c); close(closed) }()
		begin := time.Now()
	send:
		for i := start; i < len(trickle); i++ {
			select {
			case <-closed:
				break send
			case <-time.After(30 * time.Millisecond):
			}
			c.Write(trickle[i : i+1])
		}
		select {
		case <-closed:
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: the trickling connection is still open", name)
		}
		if d := time.Since(begin); d > 2*time.Second {
			t.Fatalf("%s: closed after %v", name, d)
		}
		c.Close()
	}
	if got := p.stat("http.ingress.downstream_rq_header_timeout"); got != 2 {
		t.Fatalf("downstream_rq_header_timeout = %d, want 2", got)
	}
	if code, _ := get(t, p.url("ingress")+"/ok"); code != 200 {
		t.Fatalf("a request in time: %d", code)
	}
	resp, err := h2cClient().Get(p.url("ingress") + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
