package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// The tests here run Istio's own control plane: istio-pilot-peer
// (test/peers/istio) is pilot, in-process with fake Kubernetes clients,
// serving ADS; Strait connects to it as an ingress gateway.

// pilotPeer is a running istio-pilot-peer.
type pilotPeer struct {
	Addr   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	mu     sync.Mutex
}

// startPilot runs pilot with the Istio resources in cfg.
func startPilot(t *testing.T, cfg string) *pilotPeer { return startPilotWith(t, cfg, "", "") }

// startPilotWith runs pilot with Istio resources and Kubernetes objects
// (Secrets). With objects, every ADS client is taken to be the gateway's
// service account, as istiod would learn from its workload certificate,
// so that pilot serves it the Secrets its Gateways name.
func startPilotWith(t *testing.T, cfg, kube, meshCfg string) *pilotPeer {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "istio.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", path}
	if kube != "" {
		kp := filepath.Join(dir, "kube.yaml")
		if err := os.WriteFile(kp, []byte(kube), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-kube", kp, "-identity", "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway")
	}
	if meshCfg != "" {
		mp := filepath.Join(dir, "mesh.yaml")
		if err := os.WriteFile(mp, []byte(meshCfg), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-mesh", mp)
	}
	p := &pilotPeer{stderr: &syncBuffer{}, lines: make(chan string, 16)}
	p.cmd = exec.Command(tool(t, "istio-pilot-peer"), args...)
	if kube != "" {
		p.cmd.Env = append(os.Environ(), "XDS_AUTH_PLAINTEXT=true")
	}
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stdin.Close()
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	select {
	case l, ok := <-p.lines:
		if !ok || !strings.HasPrefix(l, "ADS ") {
			t.Fatalf("istio-pilot-peer did not start (%q):\n%s", l, p.stderr.String())
		}
		p.Addr = strings.TrimPrefix(l, "ADS ")
	case <-time.After(60 * time.Second):
		t.Fatalf("istio-pilot-peer not serving in 60s:\n%s", p.stderr.String())
	}
	return p
}

// apply creates or replaces Istio resources in the running pilot.
func (p *pilotPeer) apply(t *testing.T, cfg string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("apply-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.stdin, "apply %s\n", path)
	select {
	case l := <-p.lines:
		if !strings.HasPrefix(l, "ok ") {
			t.Fatalf("pilot: %s", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("pilot did not answer apply:\n%s", p.stderr.String())
	}
}

// gatewayNode is the node of an Istio ingress gateway in istio-system
// whose labels the Gateways' selector matches.
const gatewayNode = `node:
  id: router~10.0.0.1~ingress.istio-system~istio-system.svc.cluster.local
  cluster: istio-ingressgateway.istio-system
  metadata:
    NAMESPACE: istio-system
    CLUSTER_ID: Kubernetes
    ISTIO_VERSION: 1.29.0
    LABELS: { istio: ingressgateway }
`

// istioGateway is Strait's bootstrap as that gateway, on pilot's ADS.
func istioGateway(pilot string, delta bool) string {
	y := testutil.XDSBootstrap("x", pilot, "127.0.0.1:0", delta)
	return strings.Replace(y, "node: { id: x, cluster: test }\n", gatewayNode, 1)
}

// gatewayHead opens the Gateway "ingress" that the gateway node's labels
// select; its servers follow.
const gatewayHead = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: ingress, namespace: istio-system }
spec:
  selector: { istio: ingressgateway }
  servers:
`

// istioBase is a Gateway on port (bound to the loopback address), a
// ServiceEntry for the host backend.example.com at the given endpoints
// (STATIC resolution) and a VirtualService routing to it.
func istioBase(port int, endpoints ...string) string {
	var eps []string
	for _, e := range endpoints {
		h, p, _ := net.SplitHostPort(e)
		eps = append(eps, fmt.Sprintf("  - { address: %s, ports: { http: %s } }", h, p))
	}
	return gatewayHead + fmt.Sprintf(`  - port: { number: %d, name: http, protocol: HTTP }
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: backend, namespace: istio-system }
spec:
  hosts: [backend.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [ { number: 18080, name: http, protocol: HTTP } ]
  endpoints:
%s
`, port, strings.Join(eps, "\n"))
}

// istioRoute is the VirtualService: retries on 5xx, a timeout, header
// manipulation, and /v2 to the second ServiceEntry when given.
const istioRoute = `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: route, namespace: istio-system }
spec:
  hosts: ["*"]
  gateways: [istio-system/ingress]
  http:
  - route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
    timeout: 5s
    retries: { attempts: 2, retryOn: 5xx }
    headers:
      request: { set: { x-istio-req: gateway } }
      response: { add: { x-istio-resp: gateway } }
`

const istioDestinationRule = `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: backend, namespace: istio-system }
spec:
  host: backend.example.com
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    connectionPool:
      tcp: { maxConnections: 100, connectTimeout: 2s }
      http: { http1MaxPendingRequests: 100, maxRequestsPerConnection: 50 }
    outlierDetection: { consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100 }
`

// awaitGateway asks try until its status is 200 (until ready says so,
// when given) or 20 s pass: the time pilot's config takes to reach a
// fresh gateway. It returns the last answer.
func awaitGateway(try func() (int, string), ready ...func(code int) bool) (int, string) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, got := try()
		done := code == 200
		if len(ready) > 0 {
			done = ready[0](code)
		}
		if done || time.Now().After(deadline) {
			return code, got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var rejectedRE = regexp.MustCompile(`(?m)^(\S+update_rejected): (\d+)$`)

// rejections lists the xDS types whose updates Strait rejected.
func rejections(t *testing.T, admin string) []string {
	t.Helper()
	_, body := get(t, admin+"/stats?filter=update_rejected")
	var out []string
	for _, m := range rejectedRE.FindAllStringSubmatch(body, -1) {
		if n, _ := strconv.Atoi(m[2]); n > 0 {
			out = append(out, m[1]+"="+m[2])
		}
	}
	return out
}

// TestIstioGateway: Istio's pilot serves Strait as its ingress gateway,
// over state-of-the-world ADS and over delta: every resource is ACKed,
// requests reach the ServiceEntry's endpoints through the Gateway and
// VirtualService with its header manipulation and retries, and a
// VirtualService change in pilot reaches Strait.
func TestIstioGateway(t *testing.T) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			seen := map[string]string{}
			up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen[r.URL.Path] = r.Header.Get("x-istio-req")
				mu.Unlock()
				w.Write([]byte("backend " + r.URL.Path))
			}, false)
			_, ps, _ := net.SplitHostPort(closedPort(t))
			port, _ := strconv.Atoi(ps)
			pilot := startPilot(t, istioBase(port, up)+istioRoute+istioDestinationRule)
			proc := runStrait(t, istioGateway(pilot.Addr, delta), 0, "--log-level", "debug")
			admin := "http://" + proc.admin
			url := fmt.Sprintf("http://127.0.0.1:%d", port)
			c := &http.Client{Timeout: 2 * time.Second}
			code, got := awaitGateway(func() (int, string) { return body(c, url+"/a") })
			if code != 200 || got != "backend /a" {
				_, dump := get(t, admin+"/config_dump")
				t.Fatalf("through the gateway: %d %q; rejected %v\n%s\nconfig:\n%.4000s", code, got, rejections(t, admin), proc.stderr.String(), dump)
			}
			if r := rejections(t, admin); len(r) > 0 {
				t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
			}
			mu.Lock()
			h := seen["/a"]
			mu.Unlock()
			if h != "gateway" {
				t.Errorf("the VirtualService's request header did not reach the upstream: %q", h)
			}
			resp, err := c.Get(url + "/b")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Header.Get("x-istio-resp") != "gateway" {
				t.Errorf("the VirtualService's response header is missing: %v", resp.Header)
			}
			// A new route in pilot reaches Strait, under load: no request
			// fails across the change.
			var sent, failed atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					lc := &http.Client{Timeout: 5 * time.Second}
					defer lc.CloseIdleConnections()
					for i := 0; i < 3000; i++ { // bounded; stop ends it first
						select {
						case <-stop:
							return
						default:
						}
						code, got := body(lc, url+"/load")
						sent.Add(1)
						if code != 200 || got != "backend /load" {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q", code, got))
						}
						time.Sleep(5 * time.Millisecond)
					}
				}()
			}
			other := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("other")) }, false)
			oh, op, _ := net.SplitHostPort(other)
			pilot.apply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: other, namespace: istio-system }
spec:
  hosts: [other.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [ { number: 18081, name: http, protocol: HTTP } ]
  endpoints: [ { address: %s, ports: { http: %s } } ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: route, namespace: istio-system }
spec:
  hosts: ["*"]
  gateways: [istio-system/ingress]
  http:
  - match: [ { uri: { prefix: /v2 } } ]
    route: [ { destination: { host: other.example.com, port: { number: 18081 } } } ]
  - route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: backend, namespace: istio-system }
spec:
  host: backend.example.com
  trafficPolicy:
    loadBalancer: { simple: LEAST_REQUEST }
    connectionPool:
      tcp: { maxConnections: 50, connectTimeout: 2s }
      http: { http1MaxPendingRequests: 50, maxRequestsPerConnection: 10 }
`, oh, op))
			deadline := time.Now().Add(10 * time.Second)
			for {
				if code, got = body(c, url+"/v2"); code == 200 && got == "other" {
					break
				}
				if time.Now().After(deadline) {
					_, cl := get(t, admin+"/clusters")
					t.Fatalf("the new route: %d %q\n%s\n/clusters:\n%s\npilot:\n%s", code, got, proc.stderr.String(), cl, pilot.stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The DestinationRule change replaced the backend's cluster.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if _, dump := get(t, admin+"/config_dump"); strings.Contains(dump, "LEAST_REQUEST") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the DestinationRule change did not reach Strait")
				}
			}
			time.Sleep(200 * time.Millisecond)
			close(stop)
			wg.Wait()
			if f := failed.Load(); f != 0 || sent.Load() < 20 {
				t.Errorf("%d of %d requests failed across the change; first: %v", f, sent.Load(), firstErr.Load())
			}
			if code, got := body(c, url+"/c"); code != 200 || got != "backend /c" {
				t.Errorf("the old route after the change: %d %q", code, got)
			}
			if r := rejections(t, admin); len(r) > 0 {
				t.Fatalf("Strait rejected pilot's updates after the change: %v\n%s", r, proc.stderr.String())
			}
		})
	}
}

// serviceEntry is a MESH_EXTERNAL ServiceEntry for host on port, at the
// given endpoints (STATIC).
func serviceEntry(name, host string, port int, endpoints ...string) string {
	return serviceEntryOf("HTTP", name, host, port, endpoints...)
}

// serviceEntryOf is serviceEntry for a port of protocol proto (HTTP,
// TLS, TCP, GRPC).
func serviceEntryOf(proto, name, host string, port int, endpoints ...string) string {
	pn := strings.ToLower(proto)
	var eps []string
	for _, e := range endpoints {
		h, p, _ := net.SplitHostPort(e)
		eps = append(eps, fmt.Sprintf("  - { address: %s, ports: { %s: %s } }", h, pn, p))
	}
	return fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: %s, namespace: istio-system }
spec:
  hosts: [%s]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [ { number: %d, name: %s, protocol: %s } ]
  endpoints:
%s
`, name, host, port, pn, proto, strings.Join(eps, "\n"))
}

// countingServer answers with its name and counts requests by path.
type countingServer struct {
	addr string
	mu   sync.Mutex
	hits map[string]int
}

func startCounting(t *testing.T, name string, status func(n int) int) *countingServer {
	s := &countingServer{hits: map[string]int{}}
	s.addr = serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		n := s.hits[r.URL.Path]
		s.mu.Unlock()
		w.WriteHeader(status(n))
		w.Write([]byte(name))
	}, false)
	return s
}

func (s *countingServer) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

// TestIstioGatewayTraffic: what a VirtualService and a DestinationRule
// promise, through Strait as pilot configured it: fault injection,
// weighted destinations, mirroring, retries, and outlier ejection; over
// state-of-the-world ADS and over delta.
func TestIstioGatewayTraffic(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) { istioGatewayTraffic(t, delta) })
	}
}

func istioGatewayTraffic(t *testing.T, delta bool) {
	ok := func(int) int { return 200 }
	a := startCounting(t, "a", ok)
	b := startCounting(t, "b", ok)
	mirror := startCounting(t, "mirror", ok)
	flaky := startCounting(t, "flaky", func(n int) int { // every other request fails
		if n%2 == 1 {
			return 503
		}
		return 200
	})
	good := startCounting(t, "good", ok)
	bad := startCounting(t, "bad", func(int) int { return 500 })
	_, ps, _ := net.SplitHostPort(closedPort(t))
	port, _ := strconv.Atoi(ps)
	cfg := istioBase(port, a.addr) +
		serviceEntry("b", "b.example.com", 18081, b.addr) +
		serviceEntry("mirror", "mirror.example.com", 18082, mirror.addr) +
		serviceEntry("flaky", "flaky.example.com", 18083, flaky.addr) +
		serviceEntry("pool", "pool.example.com", 18084, good.addr, bad.addr) + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: route, namespace: istio-system }
spec:
  hosts: ["*"]
  gateways: [istio-system/ingress]
  http:
  - match: [ { uri: { prefix: /fault } } ]
    fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }
    route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
  - match: [ { uri: { prefix: /weighted } } ]
    route:
    - { destination: { host: backend.example.com, port: { number: 18080 } }, weight: 75 }
    - { destination: { host: b.example.com, port: { number: 18081 } }, weight: 25 }
  - match: [ { uri: { prefix: /mirror } } ]
    route: [ { destination: { host: backend.example.com, port: { number: 18080 } } } ]
    mirror: { host: mirror.example.com, port: { number: 18082 } }
    mirrorPercentage: { value: 100 }
  - match: [ { uri: { prefix: /flaky } } ]
    route: [ { destination: { host: flaky.example.com, port: { number: 18083 } } } ]
    retries: { attempts: 3, retryOn: 5xx }
  - match: [ { uri: { prefix: /pool } } ]
    route: [ { destination: { host: pool.example.com, port: { number: 18084 } } } ]
    retries: { attempts: 0 }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: pool, namespace: istio-system }
spec:
  host: pool.example.com
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    outlierDetection: { consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50 }
`
	pilot := startPilot(t, cfg)
	proc := runStrait(t, istioGateway(pilot.Addr, delta), 0)
	admin := "http://" + proc.admin
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := &http.Client{Timeout: 3 * time.Second}
	awaitGateway(func() (int, string) { return body(c, url+"/mirror/warm") },
		func(code int) bool { return code != 0 && code != 404 && code != 503 })
	if r := rejections(t, admin); len(r) > 0 {
		t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
	}
	// Fault injection: every request aborted with 418, none upstream.
	for range 5 {
		if code, _ := body(c, url+"/fault"); code != 418 {
			t.Errorf("fault: %d, want 418", code)
		}
	}
	if n := a.count("/fault"); n != 0 {
		t.Errorf("fault: %d requests reached the upstream", n)
	}
	// Weighted destinations, 75/25.
	for range 200 {
		if code, _ := body(c, url+"/weighted"); code != 200 {
			t.Fatalf("weighted: %d", code)
		}
	}
	if na, nb := a.count("/weighted"), b.count("/weighted"); na+nb != 200 || nb < 25 || nb > 75 {
		t.Errorf("weighted 75/25: %d and %d of 200", na, nb)
	}
	// Mirroring: each request also reaches the mirror.
	for range 10 {
		if code, got := body(c, url+"/mirror"); code != 200 || got != "a" {
			t.Fatalf("mirror: %d %q", code, got)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the mirrored copies", func() bool { return mirror.count("/mirror") == 10 })
	// Retries: every other answer is a 503, each retried to a 200.
	for range 10 {
		if code, got := body(c, url+"/flaky"); code != 200 || got != "flaky" {
			t.Errorf("retried: %d %q", code, got)
		}
	}
	if n := flaky.count("/flaky"); n != 20 {
		t.Errorf("retries: the upstream saw %d requests for 10, want 20", n)
	}
	// Outlier detection: the host answering 500 is ejected after two.
	failed := 0
	for range 30 {
		if code, _ := body(c, url+"/pool"); code != 200 {
			failed++
		}
	}
	if failed != 2 || bad.count("/pool") != 2 || good.count("/pool") != 28 {
		t.Errorf("outlier ejection: %d failed; bad host %d, good %d requests", failed, bad.count("/pool"), good.count("/pool"))
	}
	_, st := get(t, admin+"/stats?filter=outlier_detection.ejections_enforced_consecutive_5xx")
	if !strings.Contains(st, "pool.example.com;.outlier_detection.ejections_enforced_consecutive_5xx: 1") {
		t.Errorf("outlier stats:\n%s", st)
	}
}

// TestIstioGatewayHosts: a Gateway with several hosts on one port, each
// with its VirtualService, and an HTTPS redirect on another; a
// ServiceEntry resolved by DNS; a delay fault.
func TestIstioGatewayHosts(t *testing.T) {
	ok := func(int) int { return 200 }
	dns := startCounting(t, "dns", ok)
	slow := startCounting(t, "slow", ok)
	_, p1, _ := net.SplitHostPort(closedPort(t))
	_, p2, _ := net.SplitHostPort(closedPort(t))
	_, dp, _ := net.SplitHostPort(dns.addr)
	cfg := gatewayHead + fmt.Sprintf(`  - port: { number: %s, name: http, protocol: HTTP }
    bind: 127.0.0.1
    hosts: [a.example.com, b.example.com]
  - port: { number: %s, name: http-redirect, protocol: HTTP }
    bind: 127.0.0.1
    hosts: [secure.example.com]
    tls: { httpsRedirect: true }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: dns, namespace: istio-system }
spec:
  hosts: [dns.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [ { number: %s, name: http, protocol: HTTP } ]
  endpoints: [ { address: localhost } ]
`, p1, p2, dp) + serviceEntry("slow", "slow.example.com", 18085, slow.addr) + fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: a, namespace: istio-system }
spec:
  hosts: [a.example.com]
  gateways: [istio-system/ingress]
  http:
  - route: [ { destination: { host: dns.example.com, port: { number: %s } } } ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: b, namespace: istio-system }
spec:
  hosts: [b.example.com]
  gateways: [istio-system/ingress]
  http:
  - fault: { delay: { fixedDelay: 300ms, percentage: { value: 100 } } }
    route: [ { destination: { host: slow.example.com, port: { number: 18085 } } } ]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: secure, namespace: istio-system }
spec:
  hosts: [secure.example.com]
  gateways: [istio-system/ingress]
  http:
  - route: [ { destination: { host: slow.example.com, port: { number: 18085 } } } ]
`, dp)
	pilot := startPilot(t, cfg)
	proc := runStrait(t, istioGateway(pilot.Addr, false), 0)
	admin := "http://" + proc.admin
	c := &http.Client{Timeout: 3 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(port, host, path string) (int, string, http.Header, time.Duration) {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+port+path, nil)
		req.Host = host
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error(), nil, 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header, time.Since(start)
	}
	code, got := awaitGateway(func() (int, string) {
		code, got, _, _ := do(p1, "a.example.com", "/x")
		return code, got
	})
	if code != 200 || got != "dns" {
		t.Fatalf("a.example.com through a DNS ServiceEntry: %d %q; rejected %v\n%s", code, got, rejections(t, admin), proc.stderr.String())
	}
	if code, got, _, d := do(p1, "b.example.com", "/y"); code != 200 || got != "slow" || d < 300*time.Millisecond {
		t.Errorf("b.example.com with a 300ms delay fault: %d %q in %v", code, got, d)
	}
	if code, _, _, _ := do(p1, "c.example.com", "/z"); code != 404 {
		t.Errorf("a host the Gateway does not serve: %d, want 404", code)
	}
	code, _, h, _ := do(p2, "secure.example.com", "/p?q=1")
	if code != 301 || h.Get("Location") != "https://secure.example.com/p?q=1" {
		t.Errorf("httpsRedirect: %d, location %q", code, h.Get("Location"))
	}
	if slow.count("/p") != 0 {
		t.Error("the redirected request reached the upstream")
	}
	if r := rejections(t, admin); len(r) > 0 {
		t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
	}
}
