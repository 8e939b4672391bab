package test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// oneConn is a listener that hands out one connection, then waits until
// it is closed.
type oneConn struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = &closeNotify{Conn: l.c, done: l.done} })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

type closeNotify struct {
	net.Conn
	done chan struct{}
	once sync.Once
}

func (c *closeNotify) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}

// TestIstioALPN: Istio's ALPN filter makes the upstream TLS connection
// offer the list for the cluster's protocol (HTTP11 here), on connections
// pooled apart from those of requests without it (a second listener shares
// the cluster); a cluster marked istio.alpn_override "false" keeps its own
// ALPN.
func TestIstioALPN(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "upstream", false, "up.example")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.NegotiatedProtocol)
	})
	srv := &http.Server{Handler: handler, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
		// Go's server closes a connection whose ALPN it has no handler
		// for: serve Istio's name for HTTP/1.1 as HTTP/1.1.
		"istio-http/1.1": func(_ *http.Server, c *tls.Conn, h http.Handler) {
			(&http.Server{Handler: h}).Serve(&oneConn{c: c, done: make(chan struct{})})
		},
	}}
	addr := serveTLS(t, cert, key, []string{"istio-http/1.1", "http/1.1"}, srv)
	const alpnFilter = `          - name: istio.alpn
            typed_config:
              "@type": type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig
              alpn_override:
              - { upstream_protocol: HTTP10, alpn_override: [istio-http/1.0, istio, http/1.0] }
              - { upstream_protocol: HTTP11, alpn_override: [istio-http/1.1, istio, http/1.1] }
              - { upstream_protocol: HTTP2, alpn_override: [istio-h2, istio, h2] }
`
	y := httpBootstrap(addr, routeCfg{}, upstreamTLS("up.example"))
	// A second listener, "plain", without the filter, to the same cluster.
	i := strings.Index(y, "  - name: ingress")
	j := strings.Index(y, "  clusters:")
	plain := strings.Replace(strings.Replace(y[i:j], "name: ingress", "name: plain", 1), "stat_prefix: ingress", "stat_prefix: plain", 1)
	y = y[:j] + plain + y[j:]
	y = strings.Replace(y, "          http_filters:\n", "          http_filters:\n"+alpnFilter, 1)
	p := startProxy(t, y)
	for k := 0; k < 3; k++ { // alternate: each request on a kept-alive connection of its own pool
		if code, body := get(t, p.url("ingress")+"/"); code != 200 || body != "istio-http/1.1" {
			t.Fatalf("with the filter: %d %q", code, body)
		}
		if code, body := get(t, p.url("plain")+"/"); code != 200 || body != "http/1.1" {
			t.Fatalf("without the filter: %d %q", code, body)
		}
	}
	marked := strings.Replace(y, "    transport_socket:", "    metadata: { filter_metadata: { istio: { alpn_override: \"false\" } } }\n    transport_socket:", 1)
	p = startProxy(t, marked)
	if code, body := get(t, p.url("ingress")+"/"); code != 200 || body != "http/1.1" {
		t.Fatalf("cluster marked alpn_override false: %d %q", code, body)
	}
}
