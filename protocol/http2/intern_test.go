package http2

import (
	"io"
	"strings"
	"testing"

	"github.com/straitproxy/strait/protocol"
)

// A repeated response head encodes without allocating: its values come
// from the cache of recent strings.
func TestEncodeHeadersNoAllocs(t *testing.T) {
	var c core
	c.init(io.Discard, defaultWindow, defaultWindow)
	var h protocol.Headers
	h.AddString(":status", "200")
	h.AddString("content-type", "text/plain; charset=utf-8")
	h.AddString("content-length", "128")
	h.AddString("x-custom-header", "some value")
	c.encodeHeaders(&h, false)
	if n := testing.AllocsPerRun(100, func() { c.encodeHeaders(&h, false) }); n != 0 {
		t.Fatalf("%v allocations per response head, want 0", n)
	}
}

func TestInternKeepsSecretsOut(t *testing.T) {
	var c core
	c.init(io.Discard, defaultWindow, defaultWindow)
	var h protocol.Headers
	h.AddString("set-cookie", "session=s3cr3t-value")
	c.encodeHeaders(&h, false)
	var req protocol.Headers
	req.AddString(":path", "/download?token=s3cr3t-token")
	req.AddString("x-api-key", "s3cr3t-key")
	c.encodeHeaders(&req, true)
	for i := range recent {
		if p := recent[i].Load(); p != nil && strings.Contains(*p, "s3cr3t") {
			t.Fatalf("%q is in the shared cache", *p)
		}
	}
	if got := intern([]byte("abc")); got != "abc" || intern([]byte("abc")) != got {
		t.Fatal("intern changed the value")
	}
}
