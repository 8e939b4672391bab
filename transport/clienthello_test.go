package transport

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

// clientHello captures the first flight of Go's TLS client.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	c, s := net.Pipe()
	go func() {
		tls.Client(c, cfg).Handshake()
	}()
	defer c.Close()
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := readFull(s, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := readFull(s, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestParseClientHello(t *testing.T) {
	rec := clientHello(t, &tls.Config{ServerName: "WWW.Example.com", NextProtos: []string{"h2", "http/1.1"}})
	h, more, err := ParseClientHello(rec, 0)
	if err != nil || more {
		t.Fatalf("more %v err %v", more, err)
	}
	if h.ServerName != "www.example.com" || !slices.Equal(h.ALPN, []string{"h2", "http/1.1"}) ||
		!slices.Contains(h.SupportedVersions, tls.VersionTLS13) || h.RecordVersion>>8 != 3 {
		t.Fatalf("%+v", h)
	}
	// Every prefix asks for more, never fails.
	for i := range len(rec) {
		if _, more, err := ParseClientHello(rec[:i], 0); !more || err != nil {
			t.Fatalf("prefix %d: more %v err %v", i, more, err)
		}
	}
	// The same message split over records of 7 bytes each.
	msg := rec[5:]
	var split []byte
	for len(msg) > 0 {
		n := min(7, len(msg))
		split = append(split, 22, rec[1], rec[2], 0, byte(n))
		split = append(split, msg[:n]...)
		msg = msg[n:]
	}
	h2, more, err := ParseClientHello(split, 0)
	if err != nil || more || h2.ServerName != h.ServerName || !slices.Equal(h2.ALPN, h.ALPN) {
		t.Fatalf("split: %+v more %v err %v", h2, more, err)
	}
	for i := range len(split) {
		if _, more, err := ParseClientHello(split[:i], 0); !more || err != nil {
			t.Fatalf("split prefix %d: more %v err %v", i, more, err)
		}
	}
	// No SNI, no ALPN.
	h, _, err = ParseClientHello(clientHello(t, &tls.Config{InsecureSkipVerify: true}), 0)
	if err != nil || h.ServerName != "" || h.ALPN != nil {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestParseClientHelloRefuses(t *testing.T) {
	rec := clientHello(t, &tls.Config{ServerName: "a.example"})
	huge := slices.Clone(rec[:9])
	huge[6], huge[7], huge[8] = 0x00, 0x40, 0x01 // 16,385 bytes
	cases := map[string][]byte{
		"GET / HTTP/1.1\r\n":     []byte("GET / HTTP/1.1\r\n"),
		"h2 preface":             []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
		"alert record":           {21, 3, 3, 0, 2, 2, 40},
		"server hello":           append([]byte{22, 3, 3, 0, 4}, 2, 0, 0, 0),
		"empty record":           {22, 3, 3, 0, 0},
		"truncated extensions":   append(slices.Clone(rec[:len(rec)-3]), 0, 0, 0)[:len(rec)],
		"version change":         {22, 3, 3, 0, 4, 1, 0, 0, 200, 22, 3, 1, 0, 1, 0},
		"SSLv2-style first byte": {0x80, 0x2e, 1, 3, 1},
	}
	for name, b := range cases {
		if name == "truncated extensions" {
			// Shorten the extensions block's content while keeping the
			// lengths: the parser must notice the overrun.
			b = slices.Clone(rec)
			binary.BigEndian.PutUint16(b[3:], uint16(len(rec)-5-3))
			b[6], b[7], b[8] = byte((len(rec)-9-3)>>16), byte((len(rec)-9-3)>>8), byte(len(rec)-9-3)
			b = b[:len(b)-3]
		}
		if _, more, err := ParseClientHello(b, 0); !errors.Is(err, ErrNotTLS) || more {
			t.Errorf("%s: more %v err %v", name, more, err)
		}
	}
	if _, _, err := ParseClientHello(huge, 0); !errors.Is(err, ErrHelloTooLarge) {
		t.Errorf("huge: %v", err)
	}
	if _, _, err := ParseClientHello(rec, len(rec)-10); !errors.Is(err, ErrHelloTooLarge) {
		t.Errorf("over a configured limit: %v", err)
	}
}

// FuzzParseClientHello: no input panics or reads past data; a hello it
// accepts yields again when parsed from a copy (no retained state).
func FuzzParseClientHello(f *testing.F) {
	f.Add(clientHello(f, &tls.Config{ServerName: "x.example", NextProtos: []string{"h2"}}))
	f.Add([]byte{22, 1, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, more, err := ParseClientHello(b, 0)
		if err == nil && !more && h == nil {
			t.Fatal("nil hello without error")
		}
		if h != nil {
			h2, _, _ := ParseClientHello(slices.Clone(b), 0)
			if h2 == nil || h2.ServerName != h.ServerName || !slices.Equal(h2.ALPN, h.ALPN) {
				t.Fatal("not deterministic")
			}
		}
	})
}
