package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests here drive dubbo-peer (test/peers/dubbo), a provider and a
// consumer built with dubbo-go v3.3.2, through Strait: over the dubbo
// protocol through dubbo_proxy, and over Triple through the HTTP/2 path.

const peerInterface = "org.strait.test.EchoService"

// dubboPeerProvider is a running dubbo-peer provider process.
type dubboPeerProvider struct {
	Addr   string
	cmd    *exec.Cmd
	stderr *syncBuffer
}

// startPeerProvider starts a dubbo-peer provider for proto ("dubbo" or
// "tri") on port, or on a free port when port is 0, and waits for it to
// accept connections.
func startPeerProvider(t *testing.T, proto string, port int) *dubboPeerProvider {
	t.Helper()
	if port == 0 {
		_, p, _ := net.SplitHostPort(closedAddr(t))
		port, _ = strconv.Atoi(p)
	}
	p := &dubboPeerProvider{Addr: fmt.Sprintf("127.0.0.1:%d", port), stderr: &syncBuffer{}}
	p.cmd = exec.Command(tool(t, "dubbo-peer"), "provider", "-protocol", proto, "-port", strconv.Itoa(port))
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		io.Copy(io.Discard, out)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("dubbo-peer provider did not start:\n%s", p.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("dubbo-peer provider not ready in 60s:\n%s", p.stderr.String())
	}
	return p
}

// Kill kills the provider at once (SIGKILL) and waits for it.
func (p *dubboPeerProvider) Kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// dubboPeerConsumer is a running dubbo-peer consumer: one command in, one
// result line out.
type dubboPeerConsumer struct {
	t      *testing.T
	in     io.WriteCloser
	out    chan string
	stderr *syncBuffer
}

func startPeerConsumer(t *testing.T, proto, addr string, timeout time.Duration) *dubboPeerConsumer {
	t.Helper()
	cmd := exec.Command(tool(t, "dubbo-peer"), "consumer", "-protocol", proto, "-addr", addr, "-timeout", timeout.String())
	c := &dubboPeerConsumer{t: t, out: make(chan string, 16), stderr: &syncBuffer{}}
	cmd.Stderr = c.stderr
	var err error
	if c.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(c.out)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.out <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		c.in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		wg.Wait()
	})
	return c
}

// peerResult is one consumer result line.
type peerResult struct {
	Status string // ok, bad or err
	Took   time.Duration
	Text   string
}

// call sends one command and waits up to wait for its result.
func (c *dubboPeerConsumer) call(cmd string, wait time.Duration) peerResult {
	c.t.Helper()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		c.t.Fatalf("consumer %q: %v\n%s", cmd, err, c.stderr.String())
	}
	select {
	case line, ok := <-c.out:
		if !ok {
			c.t.Fatalf("consumer exited during %q:\n%s", cmd, c.stderr.String())
		}
		f := strings.SplitN(line, " ", 4)
		if len(f) < 3 {
			c.t.Fatalf("consumer %q: bad line %q", cmd, line)
		}
		ms, _ := strconv.Atoi(f[2])
		r := peerResult{Status: f[0], Took: time.Duration(ms) * time.Millisecond}
		if len(f) == 4 {
			r.Text = f[3]
		}
		return r
	case <-time.After(wait):
		c.t.Fatalf("consumer %q: no answer in %v\n%s", cmd, wait, c.stderr.String())
	}
	return peerResult{}
}

// peerCases are the calls both protocols make, each with what its answer
// must say: strings, ints, a list, a map, a nested object, a 1 MiB
// argument and answer, and a provider exception.
var peerCases = []struct{ cmd, status, want string }{
	{"echo hello-through-strait", "ok", "hello-through-strait"},
	{"add 2 40", "ok", "42"},
	{"sum 1 2 3 4 -5", "ok", "5"},
	{"map 40", "ok", "n=40 sum=7800"},
	{"user", "ok", "id=42 name=Ada tags=a,b,moved city=Shanghai zip=310001"},
	{"blob 1048576", "ok", "1048576 bytes reversed"},
	{"fail the-reason-42", "err", "provider refused: the-reason-42"},
}

func runPeerCases(t *testing.T, c *dubboPeerConsumer) {
	t.Helper()
	for _, tc := range peerCases {
		r := c.call(tc.cmd, 30*time.Second)
		if r.Status != tc.status || !strings.Contains(r.Text, tc.want) {
			t.Errorf("%s: %s %q, want %s containing %q", tc.cmd, r.Status, r.Text, tc.status, tc.want)
		}
	}
}

// TestDubboGoPeer: a dubbo-go consumer calls a dubbo-go provider through
// dubbo_proxy; every argument kind arrives and every answer, exceptions
// included, comes back intact; the calls were counted by Strait.
func TestDubboGoPeer(t *testing.T) {
	prov := startPeerProvider(t, "dubbo", 0)
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", `{ interface: `+peerInterface+`, routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: provider } } ] }`, "")+`  clusters:
`+clusterOf("provider", prov.Addr))
	c := startPeerConsumer(t, "dubbo", p.addr("dubbo"), 10*time.Second)
	runPeerCases(t, c)
	p.settle()
	if n := p.stat("cluster.provider.upstream_rq_total"); n < int64(len(peerCases)) {
		t.Errorf("upstream_rq_total = %d, want >= %d: the calls did not pass through Strait", n, len(peerCases))
	}
}

// TestDubboGoPeerProviderKilled: the provider is killed mid-call; the
// dubbo-go consumer gets an error promptly (not its own timeout), and once
// a provider is back on the same port its calls succeed again without a
// new consumer.
func TestDubboGoPeerProviderKilled(t *testing.T) {
	prov := startPeerProvider(t, "dubbo", 0)
	p := startProxy(t, `
static_resources:
  listeners:
`+dubboListener("dubbo", `{ interface: `+peerInterface+`, routes: [ { match: { method: { name: { safe_regex: { regex: ".*" } } } }, route: { cluster: provider } } ] }`, "")+`  clusters:
`+clusterOf("provider", prov.Addr))
	c := startPeerConsumer(t, "dubbo", p.addr("dubbo"), 20*time.Second)
	if r := c.call("echo warm", 30*time.Second); r.Status != "ok" {
		t.Fatalf("first call: %+v", r)
	}
	got := make(chan peerResult, 1)
	go func() {
		// call's Fatal paths would be wrong off the test goroutine; the
		// line is read here and checked below.
		io.WriteString(c.in, "sleep 5000\n")
		line := <-c.out
		f := strings.SplitN(line, " ", 4)
		r := peerResult{Status: f[0]}
		if len(f) > 2 {
			ms, _ := strconv.Atoi(f[2])
			r.Took = time.Duration(ms) * time.Millisecond
		}
		if len(f) == 4 {
			r.Text = f[3]
		}
		got <- r
	}()
	time.Sleep(500 * time.Millisecond)
	prov.Kill()
	select {
	case r := <-got:
		if r.Status != "err" || r.Took > 3*time.Second {
			t.Fatalf("call whose provider died: %+v, want an error well before 5s", r)
		}
		t.Logf("killed mid-call: %s after %v: %s", r.Status, r.Took, r.Text)
	case <-time.After(10 * time.Second):
		t.Fatal("no answer 10s after the provider was killed")
	}
	_, port, _ := net.SplitHostPort(prov.Addr)
	n, _ := strconv.Atoi(port)
	startPeerProvider(t, "dubbo", n)
	var last peerResult
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if last = c.call("echo back", 30*time.Second); last.Status == "ok" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last.Status != "ok" || last.Text != "back" {
		t.Fatalf("after the restart: %+v", last)
	}
	runPeerCases(t, c)
}

// TestDubboGoTriple: the same services over Triple (gRPC-compatible HTTP/2
// with hessian2 bodies) through the HTTP connection manager, h2c both ways.
func TestDubboGoTriple(t *testing.T) {
	prov := startPeerProvider(t, "tri", 0)
	p := startProxy(t, `
static_resources:
  listeners:
  - name: triple
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: triple
          codec_type: AUTO
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [ { match: { prefix: "/`+peerInterface+`/" }, route: { cluster: provider } } ]
  clusters:
`+clusterOf("provider", prov.Addr)+`    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
`)
	c := startPeerConsumer(t, "tri", p.addr("triple"), 10*time.Second)
	runPeerCases(t, c)
	p.settle()
	if n := p.stat("http.triple.downstream_rq_http2_total"); n < int64(len(peerCases)) {
		t.Errorf("downstream_rq_http2_total = %d, want >= %d", n, len(peerCases))
	}
	if n := p.stat("cluster.provider.upstream_rq_total"); n < int64(len(peerCases)) {
		t.Errorf("upstream_rq_total = %d, want >= %d", n, len(peerCases))
	}
}
