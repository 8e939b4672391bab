package test

import (
	"bufio"
	"bytes"
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
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// straitBin is the binary built once for the tests that run it as a
// process (exit codes, signals, memory).
var straitBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "strait-test")
	if err != nil {
		panic(err)
	}
	straitBin = filepath.Join(dir, "strait")
	out, err := exec.Command("go", "build", "-o", straitBin, "../cmd/strait").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building strait: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a running strait binary.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	admin  string
	addrs  map[string]string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listeningRE = regexp.MustCompile(`msg=listening listener=(\S+) address=(\S+)|msg="admin listening" address=(\S+)`)

// runStrait starts the binary on a config file and waits until every
// listener logged its bound address.
func runStrait(t *testing.T, yaml string, listeners int, args ...string) *process {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "strait.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{stderr: &syncBuffer{}, addrs: map[string]string{}}
	p.cmd = exec.Command(straitBin, append([]string{"-c", cfg, "--io-model", ioModel().Name()}, args...)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	// Up to 30 s: the race stage of make test builds and runs many
	// packages at once on two cores. Whatever happens, the failure shows
	// the process's own log.
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, m := range listeningRE.FindAllStringSubmatch(p.stderr.String(), -1) {
			if m[1] != "" {
				p.addrs[m[1]] = m[2]
			} else {
				p.admin = m[3]
			}
		}
		if len(p.addrs) >= listeners && (p.admin != "" || !strings.Contains(yaml, "\nadmin:")) {
			break
		}
		if p.exited() {
			t.Fatalf("strait exited before it listened:\n%s", p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("strait did not listen within 30s:\n%s", p.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return p
}

// exited reports whether the process has ended (a zombie not yet
// reaped counts), without reaping it: callers still Wait for its code.
func (p *process) exited() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// exitCode waits for the process up to d and returns its exit code.
func (p *process) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		p.cmd.Process.Kill()
		t.Fatalf("strait did not exit within %v\n%s", d, p.stderr.String())
	}
	return -1
}

// peakRSS reads VmHWM (peak resident set) of the process, in KiB.
func (p *process) peakRSS(t *testing.T) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no VmHWM")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func TestConfigErrors(t *testing.T) {
	up := "127.0.0.1:1"
	good := httpBootstrap(up, routeCfg{}, "")
	cases := []struct {
		name, yaml, want string
	}{
		{"malformed yaml", "static_resources: [\n  listeners", "yaml:"},
		{"unknown field", strings.Replace(good, "stat_prefix: ingress", "stat_prefix: ingress\n          stat_prefx: typo", 1),
			`static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefx: unknown field "stat_prefx"`},
		{"missing cluster", strings.Replace(good, "route: { cluster: backend }", "route: { cluster: nowhere }", 1),
			`static_resources.listeners[0].filter_chains[0].filters[0]: filter "envoy.filters.network.http_connection_manager": typed_config.route_config: route names cluster "nowhere", which does not exist`},
		{"unknown type url", strings.Replace(good, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "type.googleapis.com/envoy.extensions.filters.http.nothing.v3.Nothing", 1),
			`static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config: unsupported type URL "type.googleapis.com/envoy.extensions.filters.http.nothing.v3.Nothing"`},
		{"known but unsupported type", strings.Replace(good, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", 1),
			`http_filters[0]: filter "envoy.filters.http.router": typed_config: unsupported http filter type "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" (supported: type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors, `},
		{"proto validation", strings.Replace(good, "connect_timeout: 1s", "connect_timeout: -1s", 1), "static_resources.clusters[0].connect_timeout: value must be greater than 0s"},
		{"duplicate listener", strings.Replace(good, "  clusters:", `  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains: [ { filters: [ { name: t, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: backend } } ] } ]
  clusters:`, 1), `static_resources.listeners[1].name: duplicate listener name "ingress"`},
		{"unimplemented hcm field", strings.Replace(good, "stat_prefix: ingress", "stat_prefix: ingress\n          proxy_status_config: {}", 1),
			"typed_config.proxy_status_config: not supported yet"},
		{"unimplemented cluster field", strings.Replace(good, "connect_timeout: 1s", "connect_timeout: 1s\n    ignore_health_on_host_removal: true", 1),
			"static_resources.clusters[0].ignore_health_on_host_removal: not supported yet"},
		{"bad regex", strings.Replace(good, `match: { prefix: "/" }`, `match: { safe_regex: { regex: "(" } }`, 1), "safe_regex"},
		{"admin not loopback", strings.Replace(good, "address: { socket_address: { address: 127.0.0.1, port_value: 0 } }\nstatic", "address: { socket_address: { address: 0.0.0.0, port_value: 0 } }\nstatic", 1), "admin.address.socket_address.address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "bad.yaml")
			os.WriteFile(cfg, []byte(tc.yaml), 0o600)
			for _, mode := range []string{"validate", "serve"} {
				out, err := exec.Command(straitBin, "-c", cfg, "--mode", mode).CombinedOutput()
				ee, ok := err.(*exec.ExitError)
				if !ok || ee.ExitCode() != 1 {
					t.Fatalf("--mode %s: err %v, want exit 1\n%s", mode, err, out)
				}
				if !strings.Contains(string(out), tc.want) {
					t.Fatalf("--mode %s: output lacks %q:\n%s", mode, tc.want, out)
				}
				if mode == "serve" && strings.Contains(string(out), "listening") {
					t.Fatalf("opened a port despite the error:\n%s", out)
				}
			}
		})
	}
	t.Run("valid config validates", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "good.yaml")
		os.WriteFile(cfg, []byte(good), 0o600)
		out, err := exec.Command(straitBin, "--config-path", cfg, "--mode", "validate").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "OK" {
			t.Fatalf("%v: %s", err, out)
		}
	})
}

// TestSIGTERMDrainsInFlight: requests in flight when SIGTERM arrives all
// complete, new connections are refused, and the process exits 0.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := runStrait(t, httpBootstrap(up.Addr, routeCfg{}, ""), 1, "--drain-time-s", "10")
	const n = 20
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + p.addrs["ingress"] + "/slow/700")
			if err != nil {
				codes <- -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	testutil.Eventually(t, 5*time.Second, "all requests in flight", func() bool { return up.Started.Load() == n })
	p.cmd.Process.Signal(syscall.SIGTERM)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("an in-flight request got %d", c)
		}
	}
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, p.stderr.String())
	}
	if _, err := net.Dial("tcp", p.addrs["ingress"]); err == nil {
		t.Fatal("listener still accepting after exit")
	}
}

// TestGigabyteBodiesStream sends 1 GiB up and 1 GiB down through the proxy
// process; its peak RSS must stay under 64 MiB.
func TestGigabyteBodiesStream(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 2 GiB")
	}
	up := testutil.StartUpstream(t)
	p := runStrait(t, httpBootstrap(up.Addr, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0s }`}, ""), 1)
	const size = 1 << 30
	base := "http://" + p.addrs["ingress"]

	uploadToSink(t, http.DefaultClient, base, size)

	resp, err := http.Get(base + "/size/" + strconv.Itoa(size))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, bufio.NewReaderSize(resp.Body, 1<<16))
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	rss := p.peakRSS(t)
	t.Logf("peak RSS after 2 GiB streamed: %d KiB", rss)
	if rss > 64<<10 {
		t.Fatalf("peak RSS %d KiB > 64 MiB", rss)
	}
}

// uploadToSink posts size zero bytes to /sink and checks that the
// upstream counted them all.
func uploadToSink(t *testing.T, c *http.Client, base string, size int) {
	t.Helper()
	uploadToSinkAt(t, c, base+"/sink", size)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestGigabyteUploadTranslated sends 1 GiB through the proxy process
// across protocol translation, HTTP/2 to HTTP/1.1 and back; flow control
// must keep its peak RSS under 64 MiB.
func TestGigabyteUploadTranslated(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 2 GiB")
	}
	const size = 1 << 30
	for _, tc := range []struct {
		name   string
		client *http.Client
		h2Up   bool
	}{{"h2-to-h1", h2cClient(), false}, {"h1-to-h2", h1Client(), true}} {
		t.Run(tc.name, func(t *testing.T) {
			up, opts := testutil.StartUpstream(t), ""
			if tc.h2Up {
				up, opts = testutil.StartUpstreamH2C(t), h2Upstream
			}
			p := runStrait(t, httpBootstrap(up.Addr, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0s }`}, opts), 1)
			uploadToSink(t, tc.client, "http://"+p.addrs["ingress"], size)
			rss := p.peakRSS(t)
			t.Logf("peak RSS after 1 GiB uploaded: %d KiB", rss)
			if rss > 64<<10 {
				t.Fatalf("peak RSS %d KiB > 64 MiB", rss)
			}
		})
	}
}
