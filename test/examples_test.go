package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExamplesBuild loads every example config through the same path as
// the binary, so that none rots.
func TestExamplesBuild(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	more, _ := filepath.Glob("../examples/*/*.yaml")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	for _, f := range files {
		t.Run(strings.TrimPrefix(f, "../examples/"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := buildServer(string(b)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// freePort returns a port that was free a moment ago, for a listener
// that binds it later. It is drawn below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range, 32768 and up by default), from which
// every ":0" bind (admin, upstreams) and outgoing connection takes its
// port: one of those can never have taken it meanwhile.
func freePort(t *testing.T) string {
	_, port, _ := net.SplitHostPort(closedPort(t))
	return port
}

// TestQuickstartServes runs examples/quickstart.yaml as the README does,
// with its fixed ports swapped for free ones.
func TestQuickstartServes(t *testing.T) {
	b, err := os.ReadFile("../examples/quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	yaml := string(b)
	for _, port := range []string{"9901", "10000", "10001"} {
		yaml = strings.ReplaceAll(yaml, "port_value: "+port+" ", "port_value: "+freePort(t)+" ")
	}
	p := runStrait(t, yaml, 2)
	code, body := get(t, fmt.Sprintf("http://%s/", p.addrs["ingress"]))
	if code != 200 || body != "hello from the backend, through the proxy\n" {
		t.Fatalf("proxied: %d %q", code, body)
	}
	code, body = get(t, fmt.Sprintf("http://%s/direct", p.addrs["ingress"]))
	if code != 200 || body != "hello from strait itself\n" {
		t.Fatalf("direct: %d %q", code, body)
	}
	code, body = get(t, "http://"+p.admin+"/stats/prometheus")
	if code != 200 || !strings.Contains(body, `envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress_http"} 2`) {
		t.Fatalf("stats: %d\n%s", code, body)
	}
}
