package http1

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/straitproxy/strait/protocol"
)

// roomy limits re-parsing of encoder output, which may add a Host field.
var roomy = Limits{MaxHeaderBytes: 1 << 20, MaxHeaders: 10000}

// checkParseError fails t unless err is ErrNeedMore or an *Error with one
// of the statuses the parsers use.
func checkParseError(t *testing.T, n int, err error, statuses ...int) {
	t.Helper()
	if n != 0 {
		t.Fatalf("n = %d with error %v", n, err)
	}
	if err == ErrNeedMore {
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error of type %T: %v", err, err)
	}
	for _, s := range statuses {
		if e.Status == s {
			return
		}
	}
	t.Fatalf("unexpected status %d (%s)", e.Status, e.Reason)
}

func FuzzParseRequestHead(f *testing.F) {
	for _, s := range []string{
		benchRequest,
		rawHead("POST /u HTTP/1.1", "Host: a", "Content-Length: 3"),
		rawHead("POST /u HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"),
		rawHead("GET http://a:1/?q HTTP/1.1", "Host: a"),
		rawHead("CONNECT a:443 HTTP/1.1", "Host: a:443"),
		rawHead("OPTIONS * HTTP/1.0"),
		rawHead("POST / HTTP/1.1", "Host: a", "Content-Length: 6", "Transfer-Encoding: chunked"),
		"\r\nGET / HTTP/1.1\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h1, h2 protocol.Headers
		if n, _, err := ParseRequestHead(data, &h1, Limits{MaxHeaderBytes: 64, MaxHeaders: 3}); err != nil {
			checkParseError(t, n, err, 400, 417, 431, 501, 505)
		}
		n, info, err := ParseRequestHead(data, &h1, Limits{})
		if err != nil {
			checkParseError(t, n, err, 400, 417, 431, 501, 505)
			return
		}
		if n <= 0 || n > len(data) || n != info.HeadLen {
			t.Fatalf("n = %d, HeadLen = %d, len = %d", n, info.HeadLen, len(data))
		}
		out := AppendRequestHead(nil, &h1, info.Framing, info.ContentLength)
		n2, info2, err := ParseRequestHead(out, &h2, roomy)
		if err != nil || n2 != len(out) {
			t.Fatalf("re-parse of %q: n = %d, err = %v", out, n2, err)
		}
		if !sameRequest(&h1, &h2) || info.Framing != info2.Framing || info.ContentLength != info2.ContentLength {
			t.Fatalf("round trip differs:\n%q %+v\n%q %+v", listFields(&h1), info, listFields(&h2), info2)
		}
	})
}

func FuzzParseResponseHead(f *testing.F) {
	for _, s := range []string{
		benchResponse,
		rawHead("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"),
		rawHead("HTTP/1.0 304", "Content-Length: 5"),
		rawHead("HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: upgrade"),
		rawHead("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6"),
	} {
		f.Add([]byte(s), false, false)
	}
	f.Add([]byte(rawHead("HTTP/1.1 200 OK", "Content-Length: 5")), true, false)
	f.Add([]byte(rawHead("HTTP/1.1 200 OK")), false, true)
	f.Fuzz(func(t *testing.T, data []byte, headReq, connect bool) {
		var h1, h2 protocol.Headers
		n, info, err := ParseResponseHead(data, &h1, Limits{}, headReq, connect)
		if err != nil {
			checkParseError(t, n, err, 502)
			return
		}
		if n <= 0 || n > len(data) {
			t.Fatalf("n = %d, len = %d", n, len(data))
		}
		out := AppendResponseHead(nil, &h1, info.Minor, info.Framing, info.ContentLength)
		_, info2, err := ParseResponseHead(out, &h2, roomy, headReq, connect)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", out, err)
		}
		if info.Status != info2.Status || info.Framing != info2.Framing || info.ContentLength != info2.ContentLength ||
			!reflect.DeepEqual(plainFields(&h1), plainFields(&h2)) {
			t.Fatalf("round trip differs:\n%q %+v\n%q %+v", listFields(&h1), info, listFields(&h2), info2)
		}
	})
}

// FuzzBodyDecoder feeds arbitrary bytes under each framing, all at once and
// in random pieces: Decode keeps its contract, never hands out more than
// arrived, and the split does not change the outcome.
func FuzzBodyDecoder(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), uint8(FramingChunked), uint16(0), uint64(1))
	f.Add([]byte("5;a=\"b\"\r\nhello\r\n0\r\nX: y\r\n\r\n"), uint8(FramingChunked), uint16(0), uint64(2))
	f.Add([]byte("fffffffffffffff\r\nabc"), uint8(FramingChunked), uint16(0), uint64(3))
	f.Add([]byte("hello world"), uint8(FramingLength), uint16(5), uint64(4))
	f.Add([]byte("hello world"), uint8(FramingUntilClose), uint16(0), uint64(5))
	f.Fuzz(func(t *testing.T, data []byte, framing uint8, cl uint16, seed uint64) {
		fr := Framing(framing % 4)
		whole, used, d, err := decodeAll(t, fr, int64(cl), data, 0)
		if len(whole) > len(data) || used > len(data) {
			t.Fatalf("body %d, consumed %d, input %d", len(whole), used, len(data))
		}
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		split, used2, d2, err2 := decodeWith(t, fr, int64(cl), data, func() int { return 1 + rng.IntN(8) })
		// consumed means nothing once Decode fails, so used is compared only
		// on success.
		if !bytes.Equal(whole, split) || d.Done() != d2.Done() || (err == nil) != (err2 == nil) ||
			err == nil && used != used2 {
			t.Fatalf("split differs: %q %d %v %v / %q %d %v %v",
				whole, used, d.Done(), err, split, used2, d2.Done(), err2)
		}
		if err == nil && !reflect.DeepEqual(listFields(&d.Trailers), listFields(&d2.Trailers)) {
			t.Fatalf("trailers differ: %q / %q", listFields(&d.Trailers), listFields(&d2.Trailers))
		}
		// (That a size field never makes the decoder allocate is pinned by
		// TestBodyDecoderHugeChunk and TestBodyDecoderAllocs: AllocsPerRun
		// inside a fuzz target stops the world on every input and cut the
		// fuzzing rate to a third.)
	})
}

// FuzzChunkRoundTrip encodes a payload as random chunks and a trailer, and
// decodes it back in random pieces.
func FuzzChunkRoundTrip(f *testing.F) {
	f.Add([]byte("hello, world"), uint64(1), "grpc-status", "0")
	f.Add([]byte(""), uint64(2), "", "")
	f.Add(bytes.Repeat([]byte("0\r\n\r\n"), 100), uint64(3), "x-sum", "a b")
	f.Fuzz(func(t *testing.T, payload []byte, seed uint64, name, value string) {
		rng := rand.New(rand.NewPCG(seed, ^seed))
		var enc []byte
		for rest := payload; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(300))
			enc, rest = AppendChunk(enc, rest[:k]), rest[k:]
		}
		var tr protocol.Headers
		if trailerOK(name, value) {
			tr.AddString(name, value)
		}
		enc = AppendLastChunk(enc, &tr)
		body, used, d, err := decodeWith(t, FramingChunked, 0, enc, func() int { return 1 + rng.IntN(64) })
		if err != nil || !d.Done() || used != len(enc) || !bytes.Equal(body, payload) {
			t.Fatalf("decode of %q: body %q used %d done %v err %v", enc, body, used, d.Done(), err)
		}
		if !reflect.DeepEqual(listFields(&d.Trailers), listFields(&tr)) {
			t.Fatalf("trailers %q, want %q", listFields(&d.Trailers), listFields(&tr))
		}
	})
}

// trailerOK reports whether name: value survives encoding unchanged: a
// token name the encoder writes, and a valid value without outer OWS.
func trailerOK(name, value string) bool {
	v := []byte(value)
	switch string(bytes.ToLower([]byte(name))) {
	case "host", "content-length", "transfer-encoding":
		return false
	}
	return isToken([]byte(name)) && validValue(v) && len(protocol.TrimOWS(v)) == len(v)
}
