package http1

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// decodeAll feeds in to a fresh decoder in pieces of step bytes (all at
// once when step <= 0); see decodeWith.
func decodeAll(t testing.TB, f Framing, cl int64, in []byte, step int) ([]byte, int, *BodyDecoder, error) {
	t.Helper()
	if step <= 0 {
		step = max(len(in), 1)
	}
	return decodeWith(t, f, cl, in, func() int { return step })
}

// decodeWith feeds in to a fresh decoder in pieces whose sizes next picks,
// keeping unconsumed bytes as a caller would, until the body is done, it
// fails, or in runs out. It returns the body, the input bytes consumed and
// the decoder, and fails t if Decode breaks its contract on the way.
func decodeWith(t testing.TB, f Framing, cl int64, in []byte, next func() int) ([]byte, int, *BodyDecoder, error) {
	t.Helper()
	d := new(BodyDecoder)
	d.Reset(f, cl, Limits{})
	var body, pending []byte
	fed, used := 0, 0
	for {
		end := min(len(in), fed+max(next(), 1))
		pending = append(pending, in[fed:end]...)
		fed = end
		for {
			data, n, done, err := d.Decode(pending)
			if n < 0 || n > len(pending) || len(data) > n {
				t.Fatalf("consumed %d data %d of %d", n, len(data), len(pending))
			}
			body = append(body, data...)
			pending, used = pending[n:], used+n
			if err != nil || done {
				return body, used, d, err
			}
			if n == 0 && len(data) == 0 {
				break
			}
		}
		if fed == len(in) {
			return body, used, d, nil
		}
	}
}

func TestBodyDecoderLength(t *testing.T) {
	var d BodyDecoder
	d.Reset(FramingLength, 10, Limits{})
	if d.Done() || d.Remaining() != 10 {
		t.Fatalf("fresh: done %v remaining %d", d.Done(), d.Remaining())
	}
	steps := []struct {
		in       string
		data     string
		consumed int
		done     bool
	}{
		{"", "", 0, false},
		{"hell", "hell", 4, false},
		{"o wor", "o wor", 5, false},
		{"ld, and the next request", "l", 1, true},
		{"GET", "", 0, true},
	}
	for i, s := range steps {
		data, n, done, err := d.Decode([]byte(s.in))
		if err != nil || string(data) != s.data || n != s.consumed || done != s.done {
			t.Fatalf("step %d: %q %d %v %v", i, data, n, done, err)
		}
	}
	if d.Remaining() != 0 {
		t.Errorf("remaining = %d", d.Remaining())
	}
}

func TestBodyDecoderNoneAndUntilClose(t *testing.T) {
	var d BodyDecoder
	for _, f := range []Framing{FramingNone, FramingLength} {
		d.Reset(f, 0, Limits{})
		if data, n, done, err := d.Decode([]byte("next")); !done || n != 0 || data != nil || err != nil || !d.Done() {
			t.Errorf("%v: %q %d %v %v", f, data, n, done, err)
		}
	}
	d.Reset(FramingUntilClose, 0, Limits{})
	for _, in := range []string{"abc", "", "0\r\n\r\n"} {
		data, n, done, err := d.Decode([]byte(in))
		if string(data) != in || n != len(in) || done || err != nil {
			t.Errorf("until-close %q: %q %d %v %v", in, data, n, done, err)
		}
	}
	if d.Remaining() != -1 {
		t.Errorf("until-close remaining = %d", d.Remaining())
	}
}

func TestBodyDecoderChunkedGood(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		body     string
		trailers []string
	}{
		{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", nil},
		{"empty body", "0\r\n\r\n", "", nil},
		{"several chunks", "3\r\nabc\r\n1\r\nd\r\nA\r\n0123456789\r\n0\r\n\r\n", "abcd0123456789", nil},
		{"hex digits in both cases", "a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n", "01234567890123456789a", nil},
		{"leading zeros", "005\r\nhello\r\n000\r\n\r\n", "hello", nil},
		{"data holding crlf", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n", nil},
		{"extension without value", "5;ext\r\nhello\r\n0\r\n\r\n", "hello", nil},
		{"extension with token value", "5;a=b;c=d\r\nhello\r\n0;last\r\n\r\n", "hello", nil},
		{"extension with quoted value", "5;a=\"b; \\\"c\\\"\t\xff\"\r\nhello\r\n0\r\n\r\n", "hello", nil},
		{"extension with bws", "5 ; a = b\t;\tc\r\nhello\r\n0\r\n\r\n", "hello", nil},
		{"trailers", "5\r\nhello\r\n0\r\nX-Sum: 42 \r\ngrpc-status:0\r\n\r\n", "hello", []string{"x-sum: 42", "grpc-status: 0"}},
		{"largest size that fits 15 digits", "0000000000000005\r\nhello\r\n0\r\n\r\n"[1:], "hello", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in + "NEXT")
			body, used, d, err := decodeAll(t, FramingChunked, 0, in, 0)
			if err != nil || !d.Done() {
				t.Fatalf("err = %v, done = %v", err, d.Done())
			}
			if string(body) != tc.body || used != len(tc.in) {
				t.Errorf("body %q consumed %d, want %q %d", body, used, tc.body, len(tc.in))
			}
			if got := listFields(&d.Trailers); !reflect.DeepEqual(got, tc.trailers) {
				t.Errorf("trailers = %q, want %q", got, tc.trailers)
			}
		})
	}
}

// TestBodyDecoderChunkedSplits checks that any split of the input, and
// byte-at-a-time feeding, gives the same body and trailers.
func TestBodyDecoderChunkedSplits(t *testing.T) {
	in := []byte("1a;x=\"y\"\r\nabcdefghijklmnopqrstuvwxyz\r\n3\r\n\r\n\r\r\n0\r\nA: b\r\nC: d\r\n\r\n")
	want, _, wd, err := decodeAll(t, FramingChunked, 0, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantTrailers := listFields(&wd.Trailers)
	for step := 1; step <= len(in); step++ {
		body, used, d, err := decodeAll(t, FramingChunked, 0, in, step)
		if err != nil || !d.Done() || used != len(in) || !bytes.Equal(body, want) ||
			!reflect.DeepEqual(listFields(&d.Trailers), wantTrailers) {
			t.Fatalf("step %d: body %q used %d err %v trailers %q", step, body, used, err, listFields(&d.Trailers))
		}
	}
	for cut := 0; cut <= len(in); cut++ {
		var d BodyDecoder
		d.Reset(FramingChunked, 0, Limits{})
		var body []byte
		rest := in[:cut]
		for round := 0; round < 2; round++ {
			for {
				data, n, _, err := d.Decode(rest)
				if err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				body, rest = append(body, data...), rest[n:]
				if n == 0 {
					break
				}
			}
			rest = append(append([]byte(nil), rest...), in[cut:]...)
		}
		if !d.Done() || !bytes.Equal(body, want) {
			t.Fatalf("cut %d: body %q done %v", cut, body, d.Done())
		}
	}
}

func TestBodyDecoderChunkedBad(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"0x prefix", "0x10\r\n"},
		{"negative", "-1\r\n"},
		{"leading space", " 1\r\n"},
		{"space inside size", "1 0\r\n"},
		{"empty size", "\r\n"},
		{"non-hex", "g\r\n"},
		{"trailing space", "5 \r\nhello\r\n0\r\n\r\n"},
		{"16 hex digits", "1000000000000000\r\n"},
		{"overflow", "ffffffffffffffffff\r\n"},
		{"bare lf after size", "5\nhello\r\n0\r\n\r\n"},
		{"bare cr after size", "5\rhello\r\n0\r\n\r\n"},
		{"data too long", "5\r\nhelloX\r\n0\r\n\r\n"},
		{"bare lf after data", "5\r\nhello\n0\r\n\r\n"},
		{"cr then junk after data", "5\r\nhello\rx"},
		{"empty extension", "5;\r\nhello\r\n"},
		{"extension name not token", "5;a@b\r\nhello\r\n"},
		{"extension without name", "5;=b\r\nhello\r\n"},
		{"extension empty value", "5;a=\r\nhello\r\n"},
		{"extension ctl", "5;a=b\x01\r\nhello\r\n"},
		{"extension unterminated quote", "5;a=\"b\r\nhello\r\n"},
		{"extension nul in quote", "5;a=\"\x00\"\r\nhello\r\n"},
		{"trailer obs-fold", "0\r\nA: b\r\n c\r\n\r\n"},
		{"trailer bad name", "0\r\nA B: c\r\n\r\n"},
		{"trailer nul", "0\r\nA: \x00\r\n\r\n"},
		{"trailer bare lf", "0\r\nA: b\n\r\n"},
		{"trailer bare lf at end", "0\r\nA: b\r\n\n"},
		{"too many trailers", "0\r\n" + strings.Repeat("A: b\r\n", DefaultMaxHeaders+1) + "\r\n"},
		{"trailers too large", "0\r\nA: " + strings.Repeat("b", DefaultMaxHeaderBytes) + "\r\n\r\n"},
		{"size line too long", "5;a=" + strings.Repeat("b", maxChunkLine)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, step := range []int{0, 1} {
				_, _, d, err := decodeAll(t, FramingChunked, 0, []byte(tc.in), step)
				var e *Error
				if !errors.As(err, &e) || e.Status != 400 {
					t.Fatalf("step %d: err = %v, want *Error 400", step, err)
				}
				if _, _, _, again := d.Decode([]byte("0\r\n\r\n")); again != err {
					t.Errorf("error not sticky: %v", again)
				}
			}
		})
	}
}

// TestBodyDecoderErrorAfterData checks that data before a framing error is
// delivered first and the error comes with the next call.
func TestBodyDecoderErrorAfterData(t *testing.T) {
	var d BodyDecoder
	d.Reset(FramingChunked, 0, Limits{})
	in := []byte("5\r\nhello\r\nzz\r\n")
	data, n, done, err := d.Decode(in)
	if string(data) != "hello" || n != 10 || done || err != nil {
		t.Fatalf("first: %q %d %v %v", data, n, done, err)
	}
	if _, _, _, err := d.Decode(in[n:]); err == nil {
		t.Fatal("second call: no error")
	}
}

// TestBodyDecoderHugeChunk checks that a huge size field costs nothing: the
// decoder only hands out what arrived.
func TestBodyDecoderHugeChunk(t *testing.T) {
	var d BodyDecoder
	in := []byte("fffffffffffffff\r\n" + strings.Repeat("z", 100))
	allocs := testing.AllocsPerRun(50, func() {
		d.Reset(FramingChunked, 0, Limits{})
		data, n, done, err := d.Decode(in)
		if len(data) != 100 || n != len(in) || done || err != nil {
			t.Fatalf("%d %d %v %v", len(data), n, done, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocs, want 0", allocs)
	}
}

func TestBodyDecoderAllocs(t *testing.T) {
	in := []byte("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n")
	var d BodyDecoder
	run := func() {
		d.Reset(FramingChunked, 0, Limits{})
		for rest := in; !d.Done(); {
			_, n, _, err := d.Decode(rest)
			if err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
	}
	run() // grow Trailers once
	if allocs := testing.AllocsPerRun(100, run); allocs != 0 {
		t.Errorf("%v allocs, want 0", allocs)
	}
}
