package accesslog

import (
	"testing"

	"github.com/straitproxy/strait/protocol"
)

// BenchmarkDefaultFormatRealHeaders formats a wrk request's line: the
// per-request cost of the default format (0 allocations).
func BenchmarkDefaultFormatRealHeaders(b *testing.B) {
	f, _ := NewText("", false)
	e := entry()
	var req, resp protocol.Headers
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "127.0.0.1:8080"}, {"user-agent", "wrk"}, {"x-forwarded-proto", "http"}} {
		req.AddString(kv[0], kv[1])
	}
	resp.AddString(":status", "200")
	resp.AddString("content-length", "128")
	resp.AddString("x-envoy-upstream-service-time", "1")
	e.Request, e.Response = &req, &resp
	var line, tmp []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		line = f.Append(line[:0], e, &tmp)
	}
}
