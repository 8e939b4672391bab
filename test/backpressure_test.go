package test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/server"
)

// countingZeros yields n zero bytes and counts what was taken.
type countingZeros struct {
	left  int64
	taken *atomic.Int64
}

func (z *countingZeros) Read(p []byte) (int, error) {
	if z.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	clear(p[:n])
	z.left -= int64(n)
	z.taken.Add(int64(n))
	return n, nil
}

// stalledAt waits until a byte counter stops moving (no progress for
// 300 ms) and returns where it stopped.
func stalledAt(n *atomic.Int64) int64 {
	last, stable := int64(-1), time.Now()
	for time.Since(stable) < 300*time.Millisecond {
		if v := n.Load(); v != last {
			last, stable = v, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return last
}

// TestUploadBackpressure: an upstream that does not read its request body
// stops the client's upload: the proxy buffers no more than its bounded
// pipe (the rest sits in the kernels' socket buffers), and once the
// upstream reads, the whole body arrives.
func TestUploadBackpressure(t *testing.T) { checkUploadBackpressure(t, http.DefaultClient, false) }

// TestUploadBackpressureH2 is the same across protocol translation: an
// HTTP/2 client to an HTTP/1.1 upstream, and an HTTP/1.1 client to an
// HTTP/2 upstream (flow-control windows credited only as the other side
// takes the bytes).
func TestUploadBackpressureH2(t *testing.T) {
	t.Run("h2-to-h1", func(t *testing.T) { checkUploadBackpressure(t, h2cClient(), false) })
	t.Run("h1-to-h2", func(t *testing.T) { checkUploadBackpressure(t, h1Client(), true) })
}

func checkUploadBackpressure(t *testing.T, client *http.Client, h2Up bool) {
	release := make(chan struct{})
	var got atomic.Int64
	var started atomic.Bool
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		started.Store(true)
		<-release
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(n)
		io.WriteString(w, strconv.FormatInt(n, 10))
	}, h2Up)
	opts := ""
	if h2Up {
		opts = h2Upstream
	}
	p := startProxy(t, httpBootstrap(addr, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0s }`}, opts))

	const size = 256 << 20
	var taken atomic.Int64
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", p.url("ingress")+"/upload", &countingZeros{left: size, taken: &taken})
		req.ContentLength = size
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the upstream to get the request", started.Load)
	last := stalledAt(&taken)
	// Socket buffers on loopback can hold tens of MiB between the client
	// and the upstream; the proxy's own share is its 64 KiB pipe. Without
	// back-pressure the whole 256 MiB would have gone.
	if last > 64<<20 {
		t.Fatalf("the client sent %d MiB to an upstream that reads nothing", last>>20)
	}
	t.Logf("upload stalled at %d KiB", last>>10)
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("upload never finished after the upstream started reading")
	}
	if got.Load() != size {
		t.Fatalf("upstream read %d bytes, want %d", got.Load(), size)
	}
}

// TestDownloadBackpressure: a client that does not read its response stops
// the upstream's writes in the same way.
func TestDownloadBackpressure(t *testing.T) {
	const size = 256 << 20
	var written atomic.Int64
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-length", strconv.Itoa(size))
		buf := make([]byte, 64<<10)
		for left := size; left > 0; left -= len(buf) {
			n, err := w.Write(buf[:min(len(buf), left)])
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}, false)
	p := startProxy(t, httpBootstrap(addr, routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0s }`}, ""))

	resp, err := http.Get(p.url("ingress") + "/download")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	last := stalledAt(&written)
	if last > 64<<20 {
		t.Fatalf("the upstream wrote %d MiB to a client that reads nothing", last>>20)
	}
	t.Logf("download stalled at %d KiB", last>>10)
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size {
		t.Fatalf("read %d bytes: %v", n, err)
	}
}

// TestWorkerPoolSaturation: with 2 workers, 12 slow requests on 12
// connections all complete; the extra ones wait in the pool's queue while
// every worker is busy.
func TestWorkerPoolSaturation(t *testing.T) {
	up := testutil.StartUpstream(t)
	b, err := config.Parse([]byte(httpBootstrap(up.Addr, routeCfg{}, "")), true)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(b, server.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DrainTime: time.Second,
		IOModel: ioModel(), Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	p := &proxy{t: t, srv: srv}
	const n = 12
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			resp, err := http.Get(p.url("ingress") + "/slow/150")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			errs <- err
		}()
	}
	testutil.Eventually(t, 5*time.Second, "requests to queue behind busy workers", func() bool {
		return p.stat("server.workers_queued") > 0
	})
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if w := srv.Pool().Workers(); w > 2 {
		t.Fatalf("%d workers for a pool of 2", w)
	}
}
