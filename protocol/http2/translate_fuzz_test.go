package http2

import (
	"testing"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/http1"
	"golang.org/x/net/http2/hpack"
)

// FuzzH2ToH1 is the differential check of issue 11: an HTTP/2 request
// head that the HTTP/2 decoder accepts, written as HTTP/1.1 by the
// encoder the proxy uses upstream, must parse (by the HTTP/1.1 parser)
// to the same method, path and authority: what the upstream receives is
// the request that was routed.
func FuzzH2ToH1(f *testing.F) {
	f.Add("GET", "http", "a.example", "/p?q=1", "x-a", "b")
	f.Add("GET /admin HTTP/1.1", "http", "a", "/public", "", "")
	f.Add("POST", "https", "a b", "/x#f", "host", "u@evil")
	f.Add("OPTIONS", "http", "", "*", "cookie", "a=1")
	f.Add("CONNECT", "", "a.example:443", "", "", "")
	f.Add("GET", "http", "[::1]:80", "/caf\xc3\xa9", "te", "trailers")
	f.Fuzz(func(t *testing.T, method, scheme, authority, path, name, value string) {
		var h protocol.Headers
		var b block
		b.reset(blkRequest, 1, true, &h, 1<<20, 100)
		emit := func(n, v string) { b.emit(hpack.HeaderField{Name: n, Value: v}) }
		emit(":method", method)
		if scheme != "" {
			emit(":scheme", scheme)
		}
		if authority != "" {
			emit(":authority", authority)
		}
		if path != "" {
			emit(":path", path)
		}
		if name != "" {
			emit(name, value)
		}
		b.finishRequest()
		if b.bad != "" || b.tooLarge {
			return
		}
		head := http1.AppendRequestHead(nil, &h, http1.FramingNone, -1)
		var got protocol.Headers
		if _, _, err := http1.ParseRequestHead(head, &got, http1.Limits{}); err != nil {
			t.Fatalf("accepted HTTP/2 request written as %q does not parse: %v", head, err)
		}
		for _, k := range []string{protocol.Method, protocol.Path, protocol.Authority} {
			want, _ := h.Get(k)
			have, _ := got.Get(k)
			if string(want) != string(have) {
				t.Fatalf("%s: routed %q, upstream reads %q (head %q)", k, want, have, head)
			}
		}
	})
}
