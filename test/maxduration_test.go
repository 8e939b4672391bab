package test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRouteMaxStreamDuration: a route's max_stream_duration bounds the
// stream from its start: an answer not begun by then is a 408
// "downstream duration timeout" (DT); with grpc_timeout_header_max the
// request's grpc-timeout (less the offset) is the bound instead (0: no
// cap, as Istio's sidecars get), and a request without one has
// max_stream_duration's; a route without a bound of its own has the
// connection manager's (common_http_protocol_options); an answer cut by
// it is reset.
func TestRouteMaxStreamDuration(t *testing.T) {
	up := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/slow"):
			time.Sleep(1500 * time.Millisecond)
		case r.URL.Path == "/stream":
			w.WriteHeader(200)
			w.Write([]byte("begun"))
			w.(http.Flusher).Flush()
			time.Sleep(1500 * time.Millisecond)
		}
		io.WriteString(w, "done")
	}, false)
	route := func(prefix, msd string) string {
		return `              - match: { prefix: "` + prefix + `" }
                route: { cluster: backend, max_stream_duration: ` + msd + ` }
`
	}
	y := httpBootstrap(up, routeCfg{hcmOpts: `          common_http_protocol_options: { max_stream_duration: 0.6s }`,
		routes: route("/header", `{ max_stream_duration: 0.3s, grpc_timeout_header_max: 0s, grpc_timeout_header_offset: 0.1s }`) +
			route("/hdronly", `{ grpc_timeout_header_max: 0s }`) + `              - match: { prefix: "/hcm" }
                route: { cluster: backend }
` + route("/", `{ max_stream_duration: 0.3s }`)}, "")
	p := startProxy(t, y)
	url := p.url("ingress")
	c := &http.Client{Timeout: 5 * time.Second}
	get := func(path string, hdr ...string) (int, string, time.Duration, error) {
		req, _ := http.NewRequest("GET", url+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", time.Since(start), err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start), err
	}
	// (The upstream answers after 1.5 s: a 408 came from the bound.)
	if code, body, took, _ := get("/slow"); code != 408 || !strings.Contains(body, "downstream duration timeout") || took < 250*time.Millisecond {
		t.Errorf("/slow: %d %q after %v, want 408 downstream duration timeout at 300 ms", code, body, took)
	}
	if code, body, _, _ := get("/fast"); code != 200 || body != "done" {
		t.Errorf("/fast: %d %q", code, body)
	}
	// grpc-timeout 700m less the 100 ms offset: 600 ms, not 300.
	code, _, took, _ := get("/header/slow", "grpc-timeout", "700m")
	if code != 408 || took < 550*time.Millisecond {
		t.Errorf("/header/slow with grpc-timeout 700m: %d after %v, want 408 at about 600 ms", code, took)
	}
	// Without the header: max_stream_duration's 300 ms.
	if code, _, took, _ := get("/header/slow"); code != 408 || took > 1200*time.Millisecond {
		t.Errorf("/header/slow without grpc-timeout: %d after %v", code, took)
	}
	// The connection manager's 600 ms, for a route without a bound of
	// its own, and for one that reads only the header when there is none.
	for _, path := range []string{"/hcm/slow", "/hdronly/slow"} {
		if code, _, took, _ := get(path); code != 408 || took < 550*time.Millisecond {
			t.Errorf("%s: %d after %v, want 408 at the connection manager's 600 ms", path, code, took)
		}
	}
	if code, _, took, _ := get("/hdronly/slow", "grpc-timeout", "200m"); code != 408 || took > 550*time.Millisecond {
		t.Errorf("/hdronly/slow with grpc-timeout 200m: %d after %v, want 408 at 200 ms", code, took)
	}
	// An answer under way when the time passes is cut.
	if code, body, _, err := get("/stream"); code != 200 || err == nil || strings.Contains(body, "done") {
		t.Errorf("/stream: %d %q %v, want the body cut", code, body, err)
	}
	if n := p.stat("http.ingress.downstream_rq_max_duration_reached"); n != 7 {
		t.Errorf("downstream_rq_max_duration_reached = %d, want 7", n)
	}
}
