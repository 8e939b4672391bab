package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
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
	"golang.org/x/net/websocket"
)

// fdCount counts the open descriptors of a process.
func fdCount(t *testing.T, pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestHotRestart upgrades the binary twice under load (20 keep-alive
// clients, 200 requests/s in all, 20 long TCP sessions and 20 WebSocket
// ones): each new
// epoch takes the listening sockets (the admin's too) from the one before
// (--restart-epoch, --base-id) and its long sessions, WebSocket tunnels
// and idle HTTP/1.1 connections (migration); the old one drains and exits 0. No request fails, no connection is refused, counters
// carry over; a new epoch with a broken config exits 1 and leaves the
// serving process as it was (its descriptors included).
func TestHotRestart(t *testing.T) {
	// WebSocket under /ws: upgraded connections move too.
	yaml, addr := wsRestartBootstrap(t)
	_, port, _ := strings.Cut(addr, "127.0.0.1:")
	// The admin's port is fixed too: each epoch's admin serves the
	// socket the one before handed over.
	_, aport, _ := strings.Cut(closedPort(t), "127.0.0.1:")
	yaml = strings.Replace(yaml, "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }", "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: "+aport+" } }", 1)
	if !strings.Contains(yaml, "port_value: "+port) || !strings.Contains(yaml, "port_value: "+aport) {
		t.Fatal("no fixed ports in the config")
	}
	// And a tcp_proxy listener in front of an echo server: its long
	// sessions move to each new epoch (connection migration).
	tcpAddr := closedPort(t)
	yaml = withTCPProxy(yaml, tcpAddr, testutil.StartEcho(t))
	dir := t.TempDir()
	base := strconv.Itoa(rand.IntN(1 << 20))
	epoch := func(n int, cfg string) *process {
		return runStrait(t, cfg, 2, "--base-id", base, "--restart-epoch", strconv.Itoa(n), "--socket-path", dir, "--drain-time-s", "3")
	}
	procs := []*process{epoch(0, yaml)}

	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			defer c.CloseIdleConnections()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for n := 0; n < 600; n++ { // at most a minute
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				resp, err := c.Get("http://" + addr + "/")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	// 20 long sessions, a message every 100 ms each, every one echoed
	// back in order: none may break or lose a byte across the upgrades.
	var exchanged atomic.Int64
	sessErrs := make(chan error, 40)
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			sessErrs <- longSession(c, i, stop, &exchanged)
		}()
	}
	// And 20 WebSocket sessions through the connection manager, the same
	// way: the upgraded connections move with their upstream ones.
	for i := 20; i < 40; i++ {
		ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://localhost/")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ws.Close()
			sessErrs <- longSession(ws, i, stop, &exchanged)
		}()
	}
	// An idle keep-alive connection: it moves too, so the request after
	// each upgrade goes over the same connection to the new epoch.
	idleTr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer idleTr.CloseIdleConnections()
	idleClient := &http.Client{Transport: idleTr, Timeout: 5 * time.Second}
	var idleSent int64
	reused := func() (bool, error) {
		idleSent++
		var got bool
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { got = i.Reused }}))
		resp, err := idleClient.Do(req)
		if err != nil {
			return false, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return false, fmt.Errorf("status %d", resp.StatusCode)
		}
		return got, nil
	}
	if _, err := reused(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	for n := 1; n <= 2; n++ {
		before := sent.Load()
		next := epoch(n, yaml)
		prev := procs[len(procs)-1]
		if code := prev.exitCode(t, 10*time.Second); code != 0 {
			t.Fatalf("epoch %d exited %d\n%s", n-1, code, prev.stderr.String())
		}
		procs = append(procs, next)
		// The long sessions moved rather than drained: the old epoch
		// says so (and its drain did not wait for them).
		moved := -1
		if m := movedRE.FindStringSubmatch(prev.stderr.String()); m != nil {
			moved, _ = strconv.Atoi(m[1])
		}
		if moved <= 40 {
			t.Errorf("epoch %d migrated %d connections, not the 40 sessions and idle ones\n%s", n-1, moved, prev.stderr.String())
		}
		if again, err := reused(); err != nil || !again {
			t.Errorf("epoch %d: the idle keep-alive connection did not move (reused %v, %v)", n, again, err)
		}
		// Counters carried over: every request the old epochs answered
		// before this one started is in its count, those they answered
		// while draining too.
		var rq int64
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if rq = adminCounter(t, next, "http.ingress.downstream_rq_total"); rq >= before || time.Now().After(deadline) {
				break
			}
		}
		if rq < before {
			t.Errorf("epoch %d: downstream_rq_total %d < %d requests sent before it", n, rq, before)
		}
		if pc := adminCounter(t, next, "server.parent_connections"); pc != 0 {
			t.Errorf("epoch %d: server.parent_connections %d after the parent exited", n, pc)
		}
		time.Sleep(time.Second)
		// The new epoch answers the load itself.
		if more := adminCounter(t, next, "http.ingress.downstream_rq_total"); more < rq+100 {
			t.Errorf("epoch %d answered %d requests in a second of 200/s", n, more-rq)
		}
	}
	cur := procs[len(procs)-1]
	fds := fdCount(t, cur.cmd.Process.Pid)

	// A broken config: the new epoch fails, the serving one is untouched.
	bad := epochBroken(t, base, dir, strings.Replace(yaml, "cluster: backend", "cluster: nosuch", 1))
	if bad == 0 {
		t.Error("a broken config started")
	}
	close(stop)
	wg.Wait()
	close(sessErrs)
	for err := range sessErrs {
		if err != nil {
			t.Error(err)
		}
	}
	if x := exchanged.Load(); x < 40*20 {
		t.Errorf("the long sessions exchanged %d messages", x)
	}
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed across two upgrades; first: %v", f, sent.Load(), firstErr.Load())
	}
	// Each request counted once, whichever epoch answered it.
	if rq := adminCounter(t, cur, "http.ingress.downstream_rq_total"); rq != sent.Load()+idleSent+20 {
		t.Errorf("downstream_rq_total %d across three epochs, %d requests answered (20 of them upgrades)", rq, sent.Load()+idleSent+20)
	}
	if code, _ := get(t, "http://"+addr+"/"); code != 200 {
		t.Errorf("after the broken upgrade: %d", code)
	}
	if got := fdCount(t, cur.cmd.Process.Pid); got > fds+2 {
		t.Errorf("descriptors of the serving process: %d before the broken upgrade, %d after", fds, got)
	}
	var si struct {
		State             string `json:"state"`
		HotRestartVersion string `json:"hot_restart_version"`
		Options           struct {
			RestartEpoch int `json:"restart_epoch"`
		} `json:"command_line_options"`
	}
	_, body := get(t, "http://"+cur.admin+"/server_info")
	if err := json.Unmarshal([]byte(body), &si); err != nil || si.State != "LIVE" || si.Options.RestartEpoch != 2 || si.HotRestartVersion == "disabled" {
		t.Errorf("/server_info: %v %s", err, body)
	}
	t.Logf("%d requests, %d failed", sent.Load(), failed.Load())
}

var movedRE = regexp.MustCompile(`connections migrated.* moved=(\d+)`)

// longSession writes a numbered line every 100 ms until stop and reads
// each back from the echo server through the proxy; any error, reset or
// wrong byte ends it with an error.
func longSession(c net.Conn, id int, stop <-chan struct{}, exchanged *atomic.Int64) error {
	r := bufio.NewReader(c)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for n := 0; n < 600; n++ { // at most a minute
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		msg := fmt.Sprintf("session %d message %d %s\n", id, n, strings.Repeat("x", n%50))
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return fmt.Errorf("session %d, message %d: %w", id, n, err)
		}
		got, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("session %d, message %d: %w", id, n, err)
		}
		if got != msg {
			return fmt.Errorf("session %d: sent %q, got %q", id, msg, got)
		}
		exchanged.Add(1)
	}
	return nil
}

// withTCPProxy adds a listener at addr with tcp_proxy to the cluster
// "echo" at echo.
func withTCPProxy(yaml, addr, echo string) string {
	lh, lp, _ := net.SplitHostPort(addr)
	eh, ep, _ := net.SplitHostPort(echo)
	yaml = strings.Replace(yaml, "  listeners:\n", fmt.Sprintf(`  listeners:
  - name: tcp
    address: { socket_address: { address: %s, port_value: %s } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
`, lh, lp), 1)
	return strings.Replace(yaml, "  clusters:\n", fmt.Sprintf(`  clusters:
  - name: echo
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: %s, port_value: %s } } }
`, eh, ep), 1)
}

// epochBroken runs a next epoch that must fail and returns its exit code.
func epochBroken(t *testing.T, base, dir, yaml string) int {
	cfg := dir + "/broken.yaml"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{stderr: &syncBuffer{}}
	p.cmd = exec.Command(straitBin, "-c", cfg, "--io-model", ioModel().Name(), "--base-id", base, "--restart-epoch", "3", "--socket-path", dir)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := p.exitCode(t, 10*time.Second)
	if !strings.Contains(p.stderr.String(), "nosuch") {
		t.Errorf("the broken epoch's error does not name the bad cluster:\n%s", p.stderr.String())
	}
	return code
}

// adminCounter reads a counter (or a gauge) from a process's /stats.
func adminCounter(t *testing.T, p *process, name string) int64 {
	_, body := get(t, "http://"+p.admin+"/stats?filter="+"^"+strings.ReplaceAll(name, ".", `\.`)+"$")
	_, v, _ := strings.Cut(strings.TrimSpace(body), ": ")
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// TestHotRestartWrapper drives deploy/strait-epochs as systemd would:
// SIGHUP (systemctl reload) starts the next epoch, which takes over
// while a kept-alive connection goes on; a SIGHUP with a broken config
// leaves the serving epoch; SIGUSR1 reaches the serving epoch; SIGTERM
// stops everything and the wrapper exits 0.
func TestHotRestartWrapper(t *testing.T) {
	up := testutil.StartUpstream(t)
	addr, admin := closedPort(t), closedPort(t)
	_, port, _ := strings.Cut(addr, "127.0.0.1:")
	_, aport, _ := strings.Cut(admin, "127.0.0.1:")
	yaml := strings.Replace(httpBootstrap(up.Addr, routeCfg{}, ""), "port_value: 0 } }\n    filter_chains", "port_value: "+port+" } }\n    filter_chains", 1)
	yaml = strings.Replace(yaml, "port_value: 0 } }\nstatic_resources", "port_value: "+aport+" } }\nstatic_resources", 1)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "strait.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	w := exec.Command("bash", "../deploy/strait-epochs", straitBin, "-c", cfg, "--io-model", ioModel().Name(), "--drain-time-s", "2")
	w.Env = append(os.Environ(), "STRAIT_BASE_ID="+strconv.Itoa(rand.IntN(1<<20)), "STRAIT_SOCKET_DIR="+dir)
	stderr := &syncBuffer{}
	w.Stderr = stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if w.ProcessState == nil {
			w.Process.Signal(syscall.SIGTERM)
			w.Wait()
		}
	})
	epoch := func() int {
		resp, err := http.Get("http://" + admin + "/server_info")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var si struct {
			Options struct {
				RestartEpoch int `json:"restart_epoch"`
			} `json:"command_line_options"`
		}
		if json.NewDecoder(resp.Body).Decode(&si) != nil {
			return -1
		}
		return si.Options.RestartEpoch
	}
	// The admin may answer a moment before the listener is bound.
	testutil.Eventually(t, 10*time.Second, "epoch 0 to serve", func() bool {
		if epoch() != 0 {
			return false
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	if code, _ := getWith(t, c, "http://"+addr+"/"); code != 200 {
		t.Fatalf("epoch 0: %d", code)
	}

	w.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, 10*time.Second, "epoch 1 to take over", func() bool { return epoch() == 1 })
	testutil.Eventually(t, 10*time.Second, "epoch 0 to exit", func() bool { return strings.Count(stderr.String(), "msg=stopped") == 1 })
	// The kept-alive connection moved with the reload.
	var reused bool
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
	if resp, err := c.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("after the reload: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !reused {
			t.Error("the kept-alive connection did not move to epoch 1")
		}
	}

	// A broken config: the next epoch fails, epoch 1 goes on.
	if err := os.WriteFile(cfg, []byte(strings.Replace(yaml, "cluster: backend", "cluster: nosuch", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	w.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, 10*time.Second, "the broken epoch to fail", func() bool { return strings.Contains(stderr.String(), "nosuch") })
	time.Sleep(300 * time.Millisecond)
	if e := epoch(); e != 1 {
		t.Errorf("after a broken reload the admin says epoch %d", e)
	}
	if code, _ := getWith(t, c, "http://"+addr+"/"); code != 200 {
		t.Errorf("after a broken reload: %d", code)
	}
	// Mended, the next reload is epoch 2.
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	w.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, 10*time.Second, "epoch 2 to take over", func() bool { return epoch() == 2 })
	testutil.Eventually(t, 10*time.Second, "epoch 1 to exit", func() bool { return strings.Count(stderr.String(), "msg=stopped") == 2 })

	w.Process.Signal(syscall.SIGUSR1)
	testutil.Eventually(t, 5*time.Second, "SIGUSR1 to reach the serving epoch", func() bool {
		return strings.Contains(stderr.String(), "reopening access logs")
	})
	w.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("strait-epochs after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("strait-epochs did not stop\n%s", stderr.String())
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the port still answers after SIGTERM")
	}
}

// getWith fetches url with c (its kept-alive connections); 0 on error.
func getWith(t *testing.T, c *http.Client, url string) (int, string) {
	resp, err := c.Get(url)
	if err != nil {
		t.Logf("GET %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
