// Package testutil has loopback peers for tests: HTTP upstreams that record
// what they receive, and a TCP echo server. Everything listens on
// 127.0.0.1:0 and is closed by t.Cleanup. It imports only the standard
// library.
package testutil

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Upstream is a loopback HTTP/1.1 server that counts requests and serves a
// few useful paths:
//
//	/echo           echoes the request body (and a header x-got-len)
//	/size/N         answers N bytes of 'x' (streamed, Content-Length set)
//	/chunked/N      answers N bytes with chunked encoding
//	/status/N       answers status N
//	/slow/MS        waits MS milliseconds, then answers "slow"
//	/sink           reads and counts the whole body, answers its length
//	/headers        answers the request headers as "name: value" lines
//	/trailers       echoes the body; answers trailer x-echo with the request
//	                trailer x-req, and grpc-status: 0
//	/proto          answers the protocol it was spoken to with
//	anything else   answers "ok <path>"
type Upstream struct {
	URL      string
	Addr     string
	Requests atomic.Int64
	// Started counts requests whose handler began (for in-flight tests).
	Started atomic.Int64
	srv     *http.Server
	mu      sync.Mutex
	paths   []string
}

// StartUpstream starts an Upstream speaking HTTP/1.1.
func StartUpstream(t testing.TB) *Upstream { return startUpstream(t, false) }

// StartUpstreamH2C starts an Upstream that also speaks HTTP/2 without TLS
// (prior knowledge), as gRPC servers do.
func StartUpstreamH2C(t testing.TB) *Upstream { return startUpstream(t, true) }

func startUpstream(t testing.TB, h2c bool) *Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{Addr: ln.Addr().String(), URL: "http://" + ln.Addr().String()}
	u.srv = &http.Server{Handler: http.HandlerFunc(u.serve), ReadHeaderTimeout: 10 * time.Second}
	if h2c {
		u.srv.Protocols = new(http.Protocols)
		u.srv.Protocols.SetHTTP1(true)
		u.srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

// Port returns the upstream's port.
func (u *Upstream) Port() int {
	_, p, _ := net.SplitHostPort(u.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Paths returns the paths requested so far, in order.
func (u *Upstream) Paths() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.paths...)
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.Started.Add(1)
	defer u.Requests.Add(1)
	u.mu.Lock()
	u.paths = append(u.paths, r.URL.RequestURI())
	u.mu.Unlock()
	p := r.URL.Path
	arg := func(prefix string) (int, bool) {
		if len(p) <= len(prefix) || p[:len(prefix)] != prefix {
			return 0, false
		}
		n, err := strconv.Atoi(p[len(prefix):])
		return n, err == nil
	}
	if n, ok := arg("/size/"); ok {
		w.Header().Set("content-length", strconv.Itoa(n))
		writeN(w, n)
		return
	}
	if n, ok := arg("/chunked/"); ok {
		writeN(w, n)
		return
	}
	if n, ok := arg("/status/"); ok {
		w.WriteHeader(n)
		io.WriteString(w, "status "+strconv.Itoa(n))
		return
	}
	if n, ok := arg("/slow/"); ok {
		time.Sleep(time.Duration(n) * time.Millisecond)
		io.WriteString(w, "slow")
		return
	}
	switch p {
	case "/echo":
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("x-got-len", strconv.Itoa(len(b)))
		w.Write(b)
	case "/sink":
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strconv.FormatInt(n, 10))
	case "/trailers":
		w.Header().Set("Trailer", "x-echo, grpc-status")
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
		w.Header().Set("x-echo", r.Trailer.Get("x-req"))
		w.Header().Set("grpc-status", "0")
	case "/proto":
		io.WriteString(w, r.Proto)
	case "/headers":
		r.Header.Write(w)
		io.WriteString(w, "Host: "+r.Host+"\r\n")
	default:
		io.WriteString(w, "ok "+r.URL.RequestURI())
	}
}

func writeN(w io.Writer, n int) {
	buf := make([]byte, 32<<10)
	for i := range buf {
		buf[i] = 'x'
	}
	for n > 0 {
		k := min(n, len(buf))
		if _, err := w.Write(buf[:k]); err != nil {
			return
		}
		n -= k
	}
}

// StartTCP starts a loopback TCP server that runs serve on each accepted
// connection (on its own goroutine; serve owns the connection) and returns
// its address. The listener closes with the test.
func StartTCP(t testing.TB, serve func(c net.Conn)) string {
	t.Helper()
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
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// StartEcho starts a TCP server that echoes every byte back and
// half-closes when the client half-closes. It returns its address.
func StartEcho(t testing.TB) string {
	t.Helper()
	return StartTCP(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
}

// Eventually polls cond every few milliseconds until it holds or the
// deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FakeConn is an in-memory connection for codec tests (it satisfies
// protocol.Conn): it counts what is written and records whether reading
// was paused and whether it was closed. Writes after Close fail.
type FakeConn struct {
	mu      sync.Mutex
	written int
	paused  bool
	closed  bool
}

func (c *FakeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.written += len(p)
	return len(p), nil
}

// Writev writes the buffers in order.
func (c *FakeConn) Writev(bufs ...[]byte) (int64, error) {
	var n int64
	for _, b := range bufs {
		k, err := c.Write(b)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *FakeConn) PauseRead()  { c.mu.Lock(); c.paused = true; c.mu.Unlock() }
func (c *FakeConn) ResumeRead() { c.mu.Lock(); c.paused = false; c.mu.Unlock() }

func (c *FakeConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *FakeConn) CloseWrite() error         { return nil }
func (c *FakeConn) LingerClose(time.Duration) { c.Close() }
func (c *FakeConn) RemoteAddr() net.Addr      { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *FakeConn) LocalAddr() net.Addr       { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }

// State reports whether reading is paused and whether the connection was
// closed.
func (c *FakeConn) State() (paused, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused, c.closed
}
