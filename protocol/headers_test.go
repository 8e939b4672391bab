package protocol

import (
	"testing"
)

func TestHeaders(t *testing.T) {
	var h Headers
	h.AddString("X-Foo", "1")
	h.Add([]byte("x-foo"), []byte("2"))
	h.Set(Method, "GET") // a pseudo-header goes in front
	h.Set(Path, "/a")
	h.Set("Content-Type", "text/plain")
	var names []string
	h.Visit(func(n, v []byte) bool { names = append(names, string(n)+"="+string(v)); return true })
	want := []string{":method=GET", ":path=/a", "x-foo=1", "x-foo=2", "content-type=text/plain"}
	if len(names) != len(want) {
		t.Fatalf("fields %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("fields %v, want %v", names, want)
		}
	}
	if h.Count("x-foo") != 2 || h.GetString("x-foo") != "1" {
		t.Fatal("multimap lookup wrong")
	}
	h.Set("x-foo", "only") // replaces both
	if h.Count("x-foo") != 1 || h.GetString("x-foo") != "only" {
		t.Fatalf("Set left %d fields", h.Count("x-foo"))
	}
	h.SetBytes("x-foo", []byte("a much longer value than before"))
	if h.GetString("x-foo") != "a much longer value than before" {
		t.Fatal("growing a value failed")
	}
	if n := h.Del("x-foo"); n != 1 || h.Has("x-foo") {
		t.Fatal("Del failed")
	}
	h.AddString("connection", "Keep-Alive, Upgrade")
	if !h.HasToken("connection", "upgrade") || h.HasToken("connection", "close") {
		t.Fatal("HasToken wrong")
	}
	var c Headers
	c.CopyFrom(&h)
	c.Set(Path, "/b")
	if string(h.Path()) != "/a" || string(c.Path()) != "/b" {
		t.Fatal("CopyFrom shares storage")
	}
}

func TestHeadersReuseDoesNotAllocate(t *testing.T) {
	var h Headers
	fill := func() {
		h.Reset()
		h.Set(Method, "GET")
		h.AddString("host", "example.com")
		h.AddString("user-agent", "curl/8")
		h.Set("x-request-id", "0123456789abcdef0123456789abcdef0123")
	}
	fill()
	if n := testing.AllocsPerRun(100, fill); n != 0 {
		t.Fatalf("%v allocations per reuse", n)
	}
}
