package test

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// strait.filters.network.fault end to end (issue 13): each mode seen
// from a real client through tcp_proxy, under both I/O models.

// l4Listener is a listener named name whose chain is one network filter
// (filterName with typedConfig, a flow mapping's inside) before
// tcp_proxy to cluster.
func l4Listener(name, filterName, typedConfig, cluster string) string {
	return `  - name: ` + name + `
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: ` + filterName + `
        typed_config: { ` + typedConfig + ` }
      - name: envoy.filters.network.tcp_proxy
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: ` + name + `, cluster: ` + cluster + ` }
`
}

func l4FaultListener(name, fault, cluster string) string {
	return l4Listener(name, "strait.filters.network.fault", `"@type": type.googleapis.com/xds.type.v3.TypedStruct,
          type_url: type.googleapis.com/strait.filters.network.fault.v1.Fault,
          value: { stat_prefix: `+name+`, `+fault+` }`, cluster)
}

func dialT(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads its echo, timing it.
func roundTrip(t *testing.T, c net.Conn, msg string) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	return time.Since(start)
}

// TestL4FaultDelay: a delay of the first bytes holds only them; a delay
// of every read holds each.
func TestL4FaultDelay(t *testing.T) {
	echo := testutil.StartEcho(t)
	p := startProxy(t, `
static_resources:
  listeners:
`+l4FaultListener("first", `delay: { duration: 300ms }`, "echo")+
		l4FaultListener("every", `delay: { duration: 200ms, every_read: true }`, "echo")+`  clusters:
`+staticCluster("echo", echo))
	c := dialT(t, p.addr("first"))
	if d := roundTrip(t, c, "one"); d < 300*time.Millisecond || d > 1500*time.Millisecond {
		t.Fatalf("first bytes took %v, want about 300ms", d)
	}
	if d := roundTrip(t, c, "two"); d > 250*time.Millisecond {
		t.Fatalf("later bytes took %v: delayed again", d)
	}
	e := dialT(t, p.addr("every"))
	for i := 0; i < 3; i++ {
		if d := roundTrip(t, e, "again"); d < 200*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("read %d took %v, want about 200ms", i, d)
		}
	}
	if got := p.stat("network_fault.first.delays_injected"); got != 1 {
		t.Errorf("first: delays_injected = %d", got)
	}
	if got := p.stat("network_fault.every.delays_injected"); got != 3 {
		t.Errorf("every: delays_injected = %d", got)
	}
}

// TestL4FaultAbort: on accept with a reset (the client reads
// ECONNRESET) or a close (EOF), and after a number of bytes each way:
// exactly that many pass, then the connection ends.
func TestL4FaultAbort(t *testing.T) {
	echo := testutil.StartEcho(t)
	// talker sends what the client wrote back after a greeting, so bytes
	// flow to the client before it writes.
	// (after the client's first byte: on loopback a reset that came
	// before the client's connect returned would fail the connect).
	greeter := testutil.StartTCP(t, func(c net.Conn) {
		defer c.Close()
		c.Read(make([]byte, 1))
		io.WriteString(c, strings.Repeat("g", 5000))
		io.Copy(io.Discard, c)
	})
	p := startProxy(t, `
static_resources:
  listeners:
`+l4FaultListener("rst", `abort: { reset: true }`, "never")+
		l4FaultListener("fin", `abort: { percent: 100 }`, "never")+
		l4FaultListener("recv", `abort: { after_bytes_received: 10, reset: true }`, "echo")+
		l4FaultListener("sent", `abort: { after_bytes_sent: 1234 }`, "greeter")+
		l4FaultListener("sent-rst", `abort: { after_bytes_sent: 1234, reset: true }`, "greeter")+`  clusters:
`+staticCluster("echo", echo)+staticCluster("never", echo)+staticCluster("greeter", greeter))

	// (On loopback the reset may come before the client's connect has
	// returned: then connect reports it.)
	rc, err := net.Dial("tcp", p.addr("rst"))
	if err == nil {
		rc.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = rc.Read(make([]byte, 1))
		rc.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("abort on accept with reset: read error %v, want ECONNRESET", err)
	}
	c := dialT(t, p.addr("fin"))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("abort on accept: read %d, %v; want EOF", n, err)
	}

	// 10 bytes go on to the echo server (TestL4FaultAbortRecvReachesUpstream
	// counts them there), then the client sees a reset (perhaps after some
	// of the echo).
	c = dialT(t, p.addr("recv"))
	io.WriteString(c, "0123456789abcdefghij")
	got, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) || len(got) > 10 || !strings.HasPrefix("0123456789", string(got)) {
		t.Fatalf("after 10 bytes received: the client got back %q, then %v (want ECONNRESET)", got, err)
	}

	// Exactly 1234 bytes of the greeting, then a FIN, or a reset once they
	// have been delivered.
	c = dialT(t, p.addr("sent"))
	io.WriteString(c, "x")
	got, err = io.ReadAll(c)
	if err != nil || len(got) != 1234 {
		t.Fatalf("after 1234 bytes sent: got %d bytes, %v", len(got), err)
	}
	c = dialT(t, p.addr("sent-rst"))
	io.WriteString(c, "x")
	got, err = io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) || len(got) != 1234 {
		t.Fatalf("after 1234 bytes sent, with a reset: got %d bytes, %v (want 1234, ECONNRESET)", len(got), err)
	}
	testutil.Eventually(t, 5*time.Second, "abort stats", func() bool {
		for _, l := range []string{"rst", "fin", "recv", "sent", "sent-rst"} {
			if p.stat("network_fault."+l+".aborts_injected") != 1 || p.stat("network_fault."+l+".active_faults") != 0 {
				return false
			}
		}
		return true
	})
	// tcp_proxy never dialled for the connections aborted on accept.
	if n := p.stat("cluster.never.upstream_cx_total"); n != 0 {
		t.Errorf("%d upstream connections for connections aborted on accept", n)
	}
}

// TestL4FaultAbortRecvReachesUpstream: with after_bytes_received, the
// upstream gets exactly the bytes before the limit.
func TestL4FaultAbortRecvReachesUpstream(t *testing.T) {
	got := make(chan []byte, 1)
	sink := testutil.StartTCP(t, func(c net.Conn) {
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	})
	p := startProxy(t, `
static_resources:
  listeners:
`+l4FaultListener("cut", `abort: { after_bytes_received: 100000 }`, "sink")+`  clusters:
`+staticCluster("sink", sink))
	c := dialT(t, p.addr("cut"))
	payload := bytes.Repeat([]byte("abcdefgh"), 50000) // 400,000 bytes
	go c.Write(payload)
	select {
	case b := <-got:
		if len(b) != 100000 || !bytes.Equal(b, payload[:100000]) {
			t.Fatalf("upstream got %d bytes, want the first 100000", len(b))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never finished")
	}
}

// TestL4FaultThrottle: the bytes to the client and the bytes from it
// move at the configured rates, within 10 %.
func TestL4FaultThrottle(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of throttled transfers")
	}
	const rate = 2 << 20 // bytes per second
	const size = 3 << 20
	source := testutil.StartTCP(t, func(c net.Conn) {
		defer c.Close()
		c.Write(bytes.Repeat([]byte("s"), size))
	})
	var upElapsed atomic.Int64
	var upBytes atomic.Int64
	done := make(chan struct{})
	sink := testutil.StartTCP(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 64<<10)
		var start time.Time
		for {
			n, err := c.Read(buf)
			if n > 0 && start.IsZero() {
				start = time.Now()
			}
			if upBytes.Add(int64(n)) >= size || err != nil {
				break
			}
		}
		upElapsed.Store(int64(time.Since(start)))
		close(done)
	})
	p := startProxy(t, `
static_resources:
  listeners:
`+l4FaultListener("down", `throttle: { write_bytes_per_second: 2097152 }`, "source")+
		l4FaultListener("up", `throttle: { read_bytes_per_second: 2097152 }`, "sink")+`  clusters:
`+staticCluster("source", source)+staticCluster("sink", sink))

	c := dialT(t, p.addr("down"))
	buf := make([]byte, 64<<10)
	var n int
	var start time.Time
	for n < size {
		k, err := c.Read(buf)
		if k > 0 && start.IsZero() {
			start = time.Now()
		}
		n += k
		if err != nil {
			break
		}
	}
	check := func(what string, n int, el time.Duration) {
		got := float64(n) / el.Seconds()
		t.Logf("%s: %d bytes in %v: %.0f B/s (configured %d)", what, n, el, got, rate)
		if n != size || math.Abs(got-rate)/rate > 0.10 {
			t.Errorf("%s: %.0f B/s, want %d ± 10 %%", what, got, rate)
		}
	}
	check("to the client", n, time.Since(start))

	u := dialT(t, p.addr("up"))
	go u.Write(bytes.Repeat([]byte("u"), size))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream never got the bytes")
	}
	check("from the client", int(upBytes.Load()), time.Duration(upElapsed.Load()))
	if got := p.stat("network_fault.up.throttles_injected") + p.stat("network_fault.down.throttles_injected"); got != 2 {
		t.Errorf("throttles_injected = %d", got)
	}
}

// TestL4FaultPercent: an abort at 50 % of 200 connections lands within
// the binomial bound; the others are proxied.
func TestL4FaultPercent(t *testing.T) {
	echo := testutil.StartEcho(t)
	p := startProxy(t, `
static_resources:
  listeners:
`+l4FaultListener("half", `abort: { percent: 50 }`, "echo")+`  clusters:
`+staticCluster("echo", echo))
	const n = 200
	ok := 0
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", p.addr("half"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "hi")
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err == nil && string(b) == "hi" {
			ok++
		}
		c.Close()
	}
	aborted := int(p.stat("network_fault.half.aborts_injected"))
	if ok+aborted != n || math.Abs(float64(aborted)-n/2) > 4.5*math.Sqrt(n*0.25) {
		t.Fatalf("%d proxied, %d aborted of %d", ok, aborted, n)
	}
}
