package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// accessLogBootstrap is an HTTP listener with a text access log in
// Envoy's default format and a JSON one, routing /ok, /slow (200 ms
// timeout), /reset and /hang to backend, /nohealthy to a cluster without
// endpoints, and nothing else.
func accessLogBootstrap(up, textPath, jsonPath string) string {
	host, port, _ := net.SplitHostPort(up)
	return fmt.Sprintf(`
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %[1]s
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %[2]s
              log_format:
                json_format:
                  code: "%%RESPONSE_CODE%%"
                  flags: "%%RESPONSE_FLAGS%%"
                  details: "%%RESPONSE_CODE_DETAILS%%"
                  path: "%%REQ(:PATH)%%"
                  method: "%%REQ(:METHOD)%%"
                  protocol: "%%PROTOCOL%%"
                  upstream: "%%UPSTREAM_HOST%%"
                  cluster: "%%UPSTREAM_CLUSTER%%"
                  upstream_local: "%%UPSTREAM_LOCAL_ADDRESS%%"
                  route: "%%ROUTE_NAME%%"
                  rx: "%%BYTES_RECEIVED%%"
                  tx: "%%BYTES_SENT%%"
                  duration: "%%DURATION%%"
                  response_duration: "%%RESPONSE_DURATION%%"
                  client: "%%DOWNSTREAM_REMOTE_ADDRESS%%"
                  local: "%%DOWNSTREAM_LOCAL_ADDRESS%%"
                  start: "%%START_TIME%%"
                  test_id: "%%REQ(X-TEST-ID)%%"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - { name: ok, match: { prefix: "/ok" }, route: { cluster: backend } }
              - { name: slow, match: { prefix: "/slow" }, route: { cluster: backend, timeout: 0.2s } }
              - { name: reset, match: { prefix: "/reset" }, route: { cluster: backend } }
              - { name: hang, match: { prefix: "/hang" }, route: { cluster: backend } }
              - { name: nohealthy, match: { prefix: "/nohealthy" }, route: { cluster: empty } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: %[3]s, port_value: %[4]s } } }
  - name: empty
    connect_timeout: 1s
    load_assignment: { cluster_name: empty }
`, textPath, jsonPath, host, port)
}

// defaultLineRE parses Envoy's default format.
var defaultLineRE = regexp.MustCompile(`^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "(\S+) (\S+) (\S+)" (\d+) (\S+) (\d+) (\d+) (\d+) (\S+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)"$`)

// TestAccessLogMixed: 1,000 requests of six kinds (200, 404 no route,
// 503 no healthy upstream, 504 timeout, upstream reset, client gone)
// give exactly 1,000 lines in the default text format and 1,000 in
// JSON, each with the code, flags and details of its kind.
func TestAccessLogMixed(t *testing.T) {
	// hanging[id] closes when the upstream has request id.
	var hanging sync.Map
	arrived := func(id string) chan struct{} {
		ch, _ := hanging.LoadOrStore(id, make(chan struct{}))
		return ch.(chan struct{})
	}
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/slow"):
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		case strings.HasPrefix(r.URL.Path, "/reset"):
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
			return
		case strings.HasPrefix(r.URL.Path, "/hang"):
			close(arrived(r.Header.Get("X-Test-Id")))
			<-r.Context().Done()
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("hello"))
	}, false)
	dir := t.TempDir()
	textPath, jsonPath := filepath.Join(dir, "text.log"), filepath.Join(dir, "json.log")
	p := startProxy(t, accessLogBootstrap(up, textPath, jsonPath))
	base := p.url("ingress")

	type kind struct {
		path, method string
		n            int
		code         int
		flags        string
		details      string
	}
	kinds := []kind{
		{"/ok", "POST", 720, 200, "-", "via_upstream"},
		{"/missing", "GET", 100, 404, "NR", "route_not_found"},
		{"/nohealthy", "GET", 100, 503, "UH", "no_healthy_upstream"},
		{"/slow", "GET", 40, 504, "UT", "upstream_response_timeout"},
		{"/reset", "POST", 20, 503, "UC", "upstream_reset_before_response_started{connection_termination}"},
		{"/hang", "GET", 20, 0, "DC", "downstream_remote_disconnect"},
	}
	var jobs []kind
	for _, k := range kinds {
		for i := 0; i < k.n; i++ {
			jobs = append(jobs, k)
		}
	}
	if len(jobs) != 1000 {
		t.Fatalf("%d jobs", len(jobs))
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 20}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(jobs))
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) {
					return
				}
				k := jobs[i]
				id := strconv.Itoa(i)
				if k.path == "/hang" {
					// The client leaves once the upstream has the request.
					c, err := net.Dial("tcp", p.addr("ingress"))
					if err != nil {
						errs <- err
						continue
					}
					fmt.Fprintf(c, "GET /hang/%s HTTP/1.1\r\nHost: x\r\nX-Test-Id: %s\r\n\r\n", id, id)
					select {
					case <-arrived(id):
					case <-time.After(5 * time.Second):
						errs <- fmt.Errorf("/hang never reached the upstream")
					}
					c.Close()
					continue
				}
				req, _ := http.NewRequest(k.method, base+k.path+"/"+id, strings.NewReader("abc"))
				if k.method == "GET" {
					req.Body, req.ContentLength = nil, 0
				}
				req.Header.Set("X-Test-Id", id)
				resp, err := client.Do(req)
				if err != nil {
					errs <- fmt.Errorf("%s: %v", k.path, err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != k.code {
					errs <- fmt.Errorf("%s: status %d, want %d", k.path, resp.StatusCode, k.code)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	text := waitLogLines(t, p, textPath, 1000)
	jsonLines := waitLogLines(t, p, jsonPath, 1000)

	byPath := map[string]kind{}
	for _, k := range kinds {
		byPath[k.path] = k
	}
	kindOf := func(path string) kind {
		return byPath["/"+strings.SplitN(strings.TrimPrefix(path, "/"), "/", 2)[0]]
	}
	seen := map[string]int{}
	for _, line := range text {
		m := defaultLineRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not Envoy's default format: %q", line)
		}
		k := kindOf(m[3])
		seen[k.path]++
		if m[2] != k.method || m[4] != "HTTP/1.1" || m[5] != strconv.Itoa(k.code) || m[6] != k.flags {
			t.Errorf("%s: %q", k.path, line)
		}
		wantUp := "-"
		if k.path != "/missing" && k.path != "/nohealthy" {
			wantUp = up
		}
		if m[15] != wantUp || m[14] != p.addr("ingress") && m[14] != "x" || m[11] != "-" || !strings.HasPrefix(m[12], "Go-http-client") && k.path != "/hang" {
			t.Errorf("%s: upstream/authority/agent fields: %q", k.path, line)
		}
		if k.path == "/ok" && (m[7] != "3" || m[8] != "5" || m[10] == "-") {
			t.Errorf("/ok: bytes or upstream service time: %q", line)
		}
		if d, _ := strconv.Atoi(m[9]); k.path == "/slow" && (d < 190 || d > 2000) {
			t.Errorf("/slow: duration %d ms: %q", d, line)
		}
	}
	for _, k := range kinds {
		if seen[k.path] != k.n {
			t.Errorf("%s: %d text lines, want %d", k.path, seen[k.path], k.n)
		}
	}
	ids := map[string]bool{}
	for _, line := range jsonLines {
		var v struct {
			Code                                                                                   float64
			Flags, Details, Path, Method, Protocol, Upstream, Cluster, Route, Client, Local, Start string
			UpstreamLocal                                                                          *string `json:"upstream_local"`
			Rx, Tx, Duration                                                                       float64
			ResponseDuration                                                                       *float64 `json:"response_duration"`
			TestID                                                                                 string   `json:"test_id"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		k := kindOf(v.Path)
		ids[v.TestID] = true
		flags := v.Flags
		if flags == "" {
			flags = "-"
		}
		if int(v.Code) != k.code || flags != k.flags && !(k.flags == "-" && line != "" && strings.Contains(line, `"flags":null`)) ||
			v.Details != k.details || v.Method != k.method || v.Protocol != "HTTP/1.1" {
			t.Errorf("%s: %s", k.path, line)
		}
		if !strings.HasPrefix(v.Client, "127.0.0.1:") || v.Local != p.addr("ingress") {
			t.Errorf("%s: addresses: %s", k.path, line)
		}
		switch k.path {
		case "/ok":
			if v.Upstream != up || v.Cluster != "backend" || v.Route != "ok" || v.Rx != 3 || v.Tx != 5 ||
				v.UpstreamLocal == nil || !strings.HasPrefix(*v.UpstreamLocal, "127.0.0.1:") || v.ResponseDuration == nil {
				t.Errorf("/ok: %s", line)
			}
		case "/missing":
			if v.Route != "" || v.Cluster != "" || v.ResponseDuration != nil {
				t.Errorf("/missing: %s", line)
			}
		case "/nohealthy":
			if v.Cluster != "empty" || v.Route != "nohealthy" {
				t.Errorf("/nohealthy: %s", line)
			}
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", v.Start); err != nil {
			t.Errorf("start time: %s", line)
		}
	}
	if len(ids) != 1000 {
		t.Errorf("JSON lines name %d distinct requests, want 1000", len(ids))
	}
}

// waitLogLines waits until the file holds n lines (the flusher writes
// every second) and checks that no more come.
func waitLogLines(t *testing.T, p *proxy, path string, n int) []string {
	t.Helper()
	var lines []string
	read := func() {
		p.srv.FlushLogs()
		b, _ := os.ReadFile(path)
		lines = nil
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
	}
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%d lines in %s", n, filepath.Base(path)), func() bool {
		read()
		return len(lines) >= n
	})
	time.Sleep(100 * time.Millisecond)
	read()
	if len(lines) != n {
		t.Fatalf("%s: %d lines, want exactly %d", filepath.Base(path), len(lines), n)
	}
	return lines
}

// TestAccessLogTCP: tcp_proxy logs each session with its bytes, duration
// and upstream; a failed connect logs UF; a listener's own access log
// logs a connection no filter chain takes with NR.
func TestAccessLogTCP(t *testing.T) {
	echo := testutil.StartEcho(t)
	deadAddr := closedPort(t)
	dir := t.TempDir()
	tcpLog, lisLog := filepath.Join(dir, "tcp.log"), filepath.Join(dir, "listener.log")
	eh, ep, _ := net.SplitHostPort(echo)
	dh, dp, _ := net.SplitHostPort(deadAddr)
	p := startProxy(t, fmt.Sprintf(`
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: tcp
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %[1]s
              log_format: { text_format_source: { inline_string: "tcp %%BYTES_RECEIVED%% %%BYTES_SENT%% %%DURATION%% %%UPSTREAM_HOST%% %%RESPONSE_FLAGS%% %%RESPONSE_CODE%%\n" } }
  - name: dead
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: dead
          cluster: dead
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %[1]s
              log_format: { text_format_source: { inline_string: "dead %%UPSTREAM_HOST%% %%RESPONSE_FLAGS%% %%UPSTREAM_TRANSPORT_FAILURE_REASON%%\n" } }
  - name: picky
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    access_log:
    - name: envoy.access_loggers.file
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
        path: %[2]s
        log_format: { text_format_source: { inline_string: "listener %%RESPONSE_FLAGS%% %%RESPONSE_CODE_DETAILS%% %%CONNECTION_TERMINATION_DETAILS%% %%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%%\n" } }
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
    listener_filters_timeout: 0.2s
    filter_chains:
    - filter_chain_match: { destination_port: 1 }
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: picky
          cluster: echo
  clusters:
  - name: echo
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: %[3]s, port_value: %[4]s } } } } ] } ]
  - name: dead
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: %[5]s, port_value: %[6]s } } } } ] } ]
`, tcpLog, lisLog, eh, ep, dh, dp))
	for i := 1; i <= 5; i++ {
		c, err := net.Dial("tcp", p.addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		msg := strings.Repeat("x", 100*i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		c.Close()
	}
	// dead: the connect fails; picky: bytes that no chain takes, then
	// a connection that sends nothing until the listener filters give up.
	for _, k := range []struct {
		name  string
		write bool
	}{{"dead", false}, {"picky", true}, {"picky", false}} {
		c, err := net.Dial("tcp", p.addr(k.name))
		if err != nil {
			t.Fatal(err)
		}
		if k.write {
			io.WriteString(c, "hello\n")
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c) // the proxy closes it
		c.Close()
	}
	lines := waitLogLines(t, p, tcpLog, 6)
	sessions := 0
	for _, line := range lines {
		f := strings.Fields(line)
		switch f[0] {
		case "tcp":
			sessions++
			rx, _ := strconv.Atoi(f[1])
			d, _ := strconv.Atoi(f[3])
			if rx%100 != 0 || rx == 0 || f[2] != f[1] || d < 20 || f[4] != echo || f[5] != "-" || f[6] != "0" {
				t.Errorf("session line: %q", line)
			}
		case "dead":
			if f[1] != deadAddr || f[2] != "UF,URX" || !strings.Contains(line, "refused") {
				t.Errorf("failed connect line: %q", line)
			}
		}
	}
	if sessions != 5 {
		t.Errorf("%d session lines, want 5: %q", sessions, lines)
	}
	l := waitLogLines(t, p, lisLog, 2)
	want := []string{"listener NR filter_chain_not_found - 127.0.0.1", "listener - - listener_filters_timeout 127.0.0.1"}
	if l[0] != want[0] && l[1] != want[0] || l[0] != want[1] && l[1] != want[1] {
		t.Errorf("listener lines: %q, want %q", l, want)
	}
}

// TestAccessLogRotation: the binary's access log is moved away and
// SIGUSR1 sent three times while requests flow; every request has its
// line in one of the files.
func TestAccessLogRotation(t *testing.T) {
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }, false)
	path := filepath.Join(t.TempDir(), "access.log")
	yaml := strings.Replace(httpBootstrap(up, routeCfg{hcmOpts: fmt.Sprintf(`          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s`, path)}, ""), "\n\n", "\n", -1)
	proc := runStrait(t, yaml, 1, "--file-flush-interval-msec", "50")
	url := "http://" + proc.addrs["ingress"] + "/"
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for i := 0; i < 50000; i++ { // bounded; stop ends it first
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(url)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent.Add(1)
			}
		}()
	}
	for r := 1; r <= 3; r++ {
		time.Sleep(150 * time.Millisecond)
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, r)); err != nil {
			t.Fatal(err)
		}
		proc.cmd.Process.Signal(syscall.SIGUSR1)
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()
	count := func() (total int, perFile []int) {
		for _, p := range []string{path + ".1", path + ".2", path + ".3", path} {
			b, _ := os.ReadFile(p)
			n := strings.Count(string(b), "\n")
			perFile = append(perFile, n)
			total += n
		}
		return
	}
	testutil.Eventually(t, 5*time.Second, "every request's line", func() bool {
		n, _ := count()
		return n >= int(sent.Load())
	})
	time.Sleep(200 * time.Millisecond)
	n, per := count()
	if n != int(sent.Load()) {
		t.Fatalf("%d lines for %d requests (per file %v)", n, sent.Load(), per)
	}
	for i, k := range per {
		if k == 0 {
			t.Errorf("file %d of the rotation got no line: %v", i, per)
		}
	}
	t.Logf("%d requests, lines per file %v", n, per)
}
