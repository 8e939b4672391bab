package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"golang.org/x/net/websocket"
)

// TestWebSocketEcho runs a real WebSocket client and server (x/net/websocket)
// through the proxy with upgrade_configs websocket.
func TestWebSocketEcho(t *testing.T) {
	wsAddr := startWSEcho(t)
	// The route timeout bounds the upgrade request, not the tunnel.
	p := startProxy(t, httpBootstrap(wsAddr, routeCfg{
		hcmOpts: "          upgrade_configs: [ { upgrade_type: websocket } ]",
		routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0.3s }`}, ""))

	ws, err := websocket.Dial("ws://"+p.addr("ingress")+"/echo", "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 20; i++ {
		msg := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i*1000))
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Fatalf("echo %d: got %d bytes, want %d", i, len(got), len(msg))
		}
	}
	time.Sleep(500 * time.Millisecond) // past the route timeout
	if err := websocket.Message.Send(ws, "still there?"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil || got != "still there?" {
		t.Fatalf("tunnel died at the route timeout: %q %v", got, err)
	}
	if got := p.stat("http.ingress.downstream_cx_upgrades_total"); got != 1 {
		t.Fatalf("downstream_cx_upgrades_total = %d", got)
	}
	// The client leaving ends the tunnel and frees the upstream connection.
	ws.Close()
	testutil.Eventually(t, 3*time.Second, "the upstream connection to close", func() bool {
		return p.stat("cluster.backend.upstream_cx_active") == 0 && p.stat("http.ingress.downstream_rq_active") == 0
	})
}

// startWSEcho runs a WebSocket server that echoes each message, closed
// by t.Cleanup; it returns its address.
func startWSEcho(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, msg) != nil {
				return
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestUpgradeNotConfiguredIsStripped(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	out, _ := rawExchange(t, p.addr("ingress"), "GET /headers HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200") || strings.Contains(out, "Upgrade: websocket") {
		t.Fatalf("upgrade forwarded without upgrade_configs:\n%s", out)
	}
}

func tcpBootstrap(upstream string) string {
	host, port, _ := net.SplitHostPort(upstream)
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: tcp
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo
          cluster: echo
  clusters:
  - name: echo
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: %s, port_value: %s } } } } ] } ]
`, host, port)
}

func TestTCPProxyHalfClose(t *testing.T) {
	p := startProxy(t, tcpBootstrap(testutil.StartEcho(t)))
	c, err := net.Dial("tcp", p.addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	payload := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
	go func() {
		io.WriteString(c, payload)
		c.(*net.TCPConn).CloseWrite() // half-close: the echo must still answer
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != payload {
		t.Fatalf("echoed %d bytes, want %d", len(got), len(payload))
	}
	testutil.Eventually(t, 2*time.Second, "byte counters", func() bool {
		return p.stat("tcp.echo.downstream_cx_rx_bytes_total") == int64(len(payload)) &&
			p.stat("tcp.echo.downstream_cx_tx_bytes_total") == int64(len(payload))
	})
}
