package istiomd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestParsePreamble(t *testing.T) {
	pre, err := Preamble(&corev3.Node{Id: "n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Whole, with bytes after it.
	if n, peer, bad, err := ParsePreamble(append(append([]byte(nil), pre...), "rest"...)); n != len(pre) || bad || err != nil || peer == nil {
		t.Fatalf("whole preamble: n=%d peer=%v bad=%v err=%v", n, peer, bad, err)
	}
	// Every strict prefix asks for more.
	for i := range len(pre) {
		if n, _, _, err := ParsePreamble(pre[:i]); n != 0 || err != nil {
			t.Fatalf("prefix of %d bytes: n=%d err=%v", i, n, err)
		}
	}
	// Hostile: not the magic; a length over the bound; garbage metadata.
	if _, _, _, err := ParsePreamble([]byte("GET / HTTP/1.1\r\n")); !errors.Is(err, ErrNoMagic) {
		t.Errorf("plain bytes: %v", err)
	}
	huge := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, Magic), 1<<31)
	if _, _, _, err := ParsePreamble(huge); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a 2 GiB length: %v", err)
	}
	junk := append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, Magic), 3), 0xff, 0xff, 0xff)
	if n, peer, bad, err := ParsePreamble(junk); n != 11 || !bad || peer != nil || err != nil {
		t.Errorf("undecodable metadata: n=%d bad=%v err=%v", n, bad, err)
	}
}

// FuzzParsePreamble: any bytes give a length within them, ask for more,
// or an error; never a panic.
func FuzzParsePreamble(f *testing.F) {
	pre, _ := Preamble(&corev3.Node{Id: "n1"}, nil)
	f.Add(pre)
	f.Add([]byte{0x3d, 0x23, 0x04, 0x67, 0, 0, 0, 2, 0x0a, 0x00})
	f.Add([]byte("hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, _, _, err := ParsePreamble(b)
		if err == nil && n > len(b) {
			t.Fatalf("length %d beyond the %d bytes", n, len(b))
		}
		if err != nil && n != 0 {
			t.Fatalf("an error with a length")
		}
		if n > 0 && !bytes.Equal(b[:4], []byte{0x3d, 0x23, 0x04, 0x67}) {
			t.Fatal("a preamble without the magic")
		}
	})
}
