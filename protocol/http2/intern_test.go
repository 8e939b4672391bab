package http2

import (
	"hash/maphash"
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
	// The cache is one slot per hash of a random per-process seed: two of
	// these values in one slot evict each other, and that run (about one
	// in 170) proves nothing.
	slots := map[uint64]bool{}
	for _, v := range []string{"200", "text/plain; charset=utf-8", "128", "some value"} {
		slot := maphash.Bytes(recentSeed, []byte(v)) % uint64(len(recent))
		if slots[slot] {
			t.Skipf("two of the test's values share a cache slot with this process's seed")
		}
		slots[slot] = true
	}
	c.encodeHeaders(&h, false)
	// AllocsPerRun counts every goroutine's allocations: goroutines other
	// tests left behind (slow under the race detector) may allocate
	// meanwhile. The best of a few runs is the encoder's own figure.
	best := -1.0
	for range 5 {
		n := testing.AllocsPerRun(100, func() { c.encodeHeaders(&h, false) })
		if best < 0 || n < best {
			best = n
		}
	}
	if best != 0 {
		t.Fatalf("%v allocations per response head, want 0", best)
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
