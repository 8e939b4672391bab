package test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"google.golang.org/protobuf/proto"
)

// Two listener filters for the tests, which act on accept as
// original_dst does: restore_local restores a connection's own local
// address as its original destination (what original_dst reads from
// conntrack for a connection that was not redirected, or under TPROXY;
// this machine has no conntrack entries to read), refuse closes it.
type testAccept struct{ refuse bool }

func (f testAccept) OnAccept(c *network.Conn) error {
	if f.refuse {
		return errors.New("refused by the test filter")
	}
	c.RestoreLocalAddr(c.Socket().LocalAddr())
	return nil
}

func (testAccept) Inspect([]byte, *network.ConnInfo) (bool, error) { return true, nil }

func init() {
	for name, refuse := range map[string]bool{"restore_local": false, "refuse": true} {
		filter.RegisterListenerStruct("strait.test."+name, "type.googleapis.com/strait.test."+name,
			func(*filter.BuildContext, proto.Message) (filter.ListenerFilter, error) {
				return testAccept{refuse: refuse}, nil
			})
	}
}

func testFilter(name, extra string) string {
	return `    - name: strait.test.` + name + `
      typed_config: { "@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/strait.test.` + name + `, value: {} }
` + extra
}

// TestUseOriginalDst: a listener with use_original_dst (Istio's
// virtualOutbound, bound to every address) hands each connection whose
// original destination its listener filters restored to the listener of
// that address: one with bind_to_port false (bound to nothing, reached
// only so) answers for 127.0.0.2; a destination no listener serves stays
// on the virtual listener's own chain (the passthrough). A listener
// filter's filter_disabled turns it off by destination port: the
// refusing filter is off on 127.0.0.2's listener and on at 127.0.0.3's.
func TestUseOriginalDst(t *testing.T) {
	pass := named(t, "passthrough")
	port := freePort(t)
	direct := func(name, body string) string {
		return `      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ` + name + `
          route_config: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, ` + body + ` } ] } ] }
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
`
	}
	answer := func(s string) string { return `direct_response: { status: 200, body: { inline_string: ` + s + ` } }` }
	h, p, _ := net.SplitHostPort(pass)
	y := `
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
static_resources:
  listeners:
  - name: virtual
    address: { socket_address: { address: 0.0.0.0, port_value: ` + port + ` } }
    use_original_dst: true
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }
` + testFilter("restore_local", "") + `    filter_chains:
    - filters:
` + direct("virtual", "route: { cluster: passthrough }") + `  - name: app
    address: { socket_address: { address: 127.0.0.2, port_value: ` + port + ` } }
    bind_to_port: false
    listener_filters:
` + testFilter("refuse", `      filter_disabled: { or_match: { rules: [ { destination_port_range: { start: 1, end: 2 } }, { destination_port_range: { start: `+port+`, end: `+fmt.Sprint(atoi(port)+1)+` } } ] } }
`) + `    filter_chains:
    - filters:
` + direct("app", answer("app")) + `  - name: closed
    address: { socket_address: { address: 127.0.0.3, port_value: ` + port + ` } }
    bind_to_port: false
    listener_filters:
` + testFilter("refuse", `      filter_disabled: { not_match: { destination_port_range: { start: `+port+`, end: `+fmt.Sprint(atoi(port)+1)+` } } }
`) + `    filter_chains:
    - filters:
` + direct("closed", answer("closed")) + `  - name: other-model
    address: { socket_address: { address: 127.0.0.5, port_value: ` + port + ` } }
    bind_to_port: false
    metadata: { filter_metadata: { strait: { io_model: ` + otherModel() + ` } } }
    filter_chains:
    - filters:
` + direct("other", answer("other")) + `  clusters:
  - name: passthrough
    connect_timeout: 1s
    load_assignment: { cluster_name: passthrough, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: ` + h + `, port_value: ` + p + ` } } } } ] } ] }
`
	px := startProxy(t, y)
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	// 127.0.0.5's listener reads with the other I/O model: the socket
	// stays with the model that accepted it (the passthrough).
	for ip, want := range map[string]string{"127.0.0.2": "200 app", "127.0.0.4": "200 passthrough", "127.0.0.5": "200 passthrough"} {
		code, got := body(c, "http://"+ip+":"+port+"/")
		if g := fmt.Sprintf("%d %s", code, got); g != want {
			t.Errorf("to %s: %s, want %s", ip, g, want)
		}
	}
	if code, got := body(c, "http://127.0.0.3:"+port+"/"); code != 0 {
		t.Errorf("to 127.0.0.3 (its refusing filter on): %d %q, want the connection closed", code, got)
	}
	// Each connection counts on the listener that served it.
	for name, want := range map[string]int64{"app": 1, "virtual": 2} {
		if n := px.stat("listener." + addrOf(name, port) + ".downstream_cx_total"); n != want {
			t.Errorf("%s: downstream_cx_total %d, want %d", name, n, want)
		}
	}
	if _, cfg := get(t, px.admin()+"/listeners"); !strings.Contains(cfg, "127.0.0.2:"+port) {
		t.Errorf("/listeners does not show the bind_to_port false listener's address:\n%s", cfg)
	}
}

// otherModel is the I/O model the tests do not run with.
func otherModel() string {
	if os.Getenv("STRAIT_IO_MODEL") == "epoll" {
		return "netpoll"
	}
	return "epoll"
}

func addrOf(name, port string) string {
	return map[string]string{"app": "127.0.0.2", "virtual": "0.0.0.0"}[name] + ":" + port
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}
