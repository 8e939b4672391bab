// Command hotrestart measures what clients see of a hot restart: Strait
// (the binary at -strait) serves 20 keep-alive HTTP/1.1 clients at a fixed
// total rate and 20 long TCP sessions through tcp_proxy (a line echoed
// every 100 ms each) while it is upgraded -upgrades times
// (--restart-epoch N+1 started, epoch N drains and exits). For each
// upgrade it prints the longest request and echo latency in the upgrade
// window (from the new epoch's start to one second after the old one's
// exit) beside the longest in the two seconds before it, and the stall:
// the difference. Failed requests and broken sessions are counted (the
// goal is none). Everything is on 127.0.0.1 and bounded in time.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type sample struct {
	at  time.Time
	lat time.Duration
}

type recorder struct {
	mu  sync.Mutex
	all []sample
}

func (r *recorder) add(at time.Time, lat time.Duration) {
	r.mu.Lock()
	r.all = append(r.all, sample{at, lat})
	r.mu.Unlock()
}

// max is the longest latency of the samples that began in [from, to).
func (r *recorder) max(from, to time.Time) (time.Duration, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var m time.Duration
	n := 0
	for _, s := range r.all {
		if !s.at.Before(from) && s.at.Before(to) {
			m = max(m, s.lat)
			n++
		}
	}
	return m, n
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

func main() {
	bin := flag.String("strait", "strait", "the strait binary")
	upgrades := flag.Int("upgrades", 5, "hot restarts to measure")
	model := flag.String("model", "netpoll", "I/O model")
	rate := flag.Int("rate", 200, "HTTP requests per second, all clients")
	flag.Parse()

	// The origin and the echo server.
	origin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	body := strings.Repeat("x", 128)
	go http.Serve(origin, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }))
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	httpAddr, tcpAddr, adminAddr := freePort(), freePort(), freePort()
	dir, err := os.MkdirTemp("", "hotrestart")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "strait.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`admin:
  address: { socket_address: { address: 127.0.0.1, port_value: %s } }
static_resources:
  listeners:
  - name: http
    address: { socket_address: { address: 127.0.0.1, port_value: %s } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: origin } } ] } ]
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
  - name: tcp
    address: { socket_address: { address: 127.0.0.1, port_value: %s } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tcp, cluster: echo }
  clusters:
  - name: origin
    connect_timeout: 1s
    load_assignment: { cluster_name: origin, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %s } } } } ] } ] }
  - name: echo
    connect_timeout: 1s
    load_assignment: { cluster_name: echo, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %s } } } } ] } ] }
`, port(adminAddr), port(httpAddr), port(tcpAddr), port(origin.Addr().String()), port(echo.Addr().String()))), 0o600)

	base := strconv.Itoa(rand.IntN(1 << 20))
	start := func(epoch int) *exec.Cmd {
		cmd := exec.Command(*bin, "-c", cfg, "--io-model", *model, "--base-id", base, "--restart-epoch", strconv.Itoa(epoch),
			"--socket-path", dir, "--drain-time-s", "5", "-l", "warning")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		return cmd
	}
	cur := start(0)
	defer func() { cur.Process.Kill(); cur.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + httpAddr + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			log.Fatal("strait did not start")
		}
	}

	var reqs, tcp recorder
	var failed, broken, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const clients, sessions = 20, 20
	every := time.Duration(clients) * time.Second / time.Duration(*rate)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			tick := time.NewTicker(every)
			defer tick.Stop()
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				t0 := time.Now()
				resp, err := c.Get("http://" + httpAddr + "/")
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
					continue
				}
				reqs.add(t0, time.Since(t0))
			}
		}()
	}
	for i := 0; i < sessions; i++ {
		c, err := net.Dial("tcp", tcpAddr)
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			r := bufio.NewReader(c)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				msg := fmt.Sprintf("%d %d\n", i, n)
				t0 := time.Now()
				c.SetDeadline(t0.Add(5 * time.Second))
				if _, err := io.WriteString(c, msg); err != nil {
					broken.Add(1)
					return
				}
				if got, err := r.ReadString('\n'); err != nil || got != msg {
					broken.Add(1)
					return
				}
				tcp.add(t0, time.Since(t0))
			}
		}()
	}

	fmt.Printf("hot restart under load (%s): %d req/s from %d keep-alive clients, %d TCP sessions echoing every 100 ms\n",
		*model, *rate, clients, sessions)
	fmt.Printf("%-8s %12s %12s %10s %12s %12s %10s %10s\n", "upgrade", "http_base", "http_upg", "stall", "tcp_base", "tcp_upg", "stall", "took")
	var httpStalls, tcpStalls []time.Duration
	for u := 1; u <= *upgrades; u++ {
		time.Sleep(2 * time.Second) // the baseline window
		t0 := time.Now()
		next := start(u)
		done := make(chan error, 1)
		go func() { done <- cur.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				log.Printf("epoch %d exited: %v", u-1, err)
			}
		case <-time.After(30 * time.Second):
			log.Fatalf("epoch %d did not exit", u-1)
		}
		took := time.Since(t0)
		cur = next
		time.Sleep(time.Second)
		t1 := time.Now()
		hb, _ := reqs.max(t0.Add(-2*time.Second), t0)
		hu, _ := reqs.max(t0, t1)
		tb, _ := tcp.max(t0.Add(-2*time.Second), t0)
		tu, _ := tcp.max(t0, t1)
		httpStalls, tcpStalls = append(httpStalls, max(hu-hb, 0)), append(tcpStalls, max(tu-tb, 0))
		ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
		fmt.Printf("%-8d %12s %12s %10s %12s %12s %10s %10s\n", u, ms(hb), ms(hu), ms(max(hu-hb, 0)), ms(tb), ms(tu), ms(max(tu-tb, 0)), ms(took))
	}
	close(stop)
	wg.Wait()
	med := func(d []time.Duration) string {
		slices.Sort(d)
		return fmt.Sprintf("%.2fms", float64(d[len(d)/2].Microseconds())/1000)
	}
	fmt.Printf("median stall: http %s, tcp %s (max over upgrades: http %s, tcp %s); %d requests, %d failed; %d sessions broken\n",
		med(httpStalls), med(tcpStalls), func() string { slices.Sort(httpStalls); return fmt.Sprint(httpStalls[len(httpStalls)-1]) }(),
		func() string { slices.Sort(tcpStalls); return fmt.Sprint(tcpStalls[len(tcpStalls)-1]) }(), sent.Load(), failed.Load(), broken.Load())
}
