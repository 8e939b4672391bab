package http1

import (
	"reflect"
	"testing"

	"github.com/straitproxy/strait/protocol"
)

// headersOf builds Headers from name, value pairs.
func headersOf(kv ...string) *protocol.Headers {
	h := new(protocol.Headers)
	for i := 0; i < len(kv); i += 2 {
		h.AddString(kv[i], kv[i+1])
	}
	return h
}

func TestAppendRequestHead(t *testing.T) {
	tests := []struct {
		name string
		h    *protocol.Headers
		f    Framing
		cl   int64
		want string
	}{
		{
			name: "get with authority",
			h:    headersOf(":method", "GET", ":authority", "a.example", ":path", "/x?y", "accept", "*/*"),
			f:    FramingNone,
			want: "GET /x?y HTTP/1.1\r\nhost: a.example\r\naccept: */*\r\n\r\n",
		},
		{
			name: "length framing replaces content-length and drops transfer-encoding",
			h: headersOf(":method", "POST", ":authority", "a", ":path", "/", "content-length", "99",
				"transfer-encoding", "chunked", "x", "1"),
			f: FramingLength, cl: 5,
			want: "POST / HTTP/1.1\r\nhost: a\r\nx: 1\r\ncontent-length: 5\r\n\r\n",
		},
		{
			name: "chunked framing",
			h:    headersOf(":method", "POST", ":authority", "a", ":path", "/", "content-length", "5", "x", "1"),
			f:    FramingChunked,
			want: "POST / HTTP/1.1\r\nhost: a\r\nx: 1\r\ntransfer-encoding: chunked\r\n\r\n",
		},
		{
			name: "none framing keeps content-length but not transfer-encoding",
			h:    headersOf(":method", "GET", ":authority", "a", ":path", "/", "content-length", "0", "transfer-encoding", "chunked"),
			f:    FramingNone,
			want: "GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
		},
		{
			name: "until-close framing keeps content-length",
			h:    headersOf(":method", "GET", ":authority", "a", ":path", "/", "content-length", "7"),
			f:    FramingUntilClose,
			want: "GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 7\r\n\r\n",
		},
		{
			name: "host field is dropped when authority is set",
			h:    headersOf(":method", "GET", ":authority", "a", ":path", "/", "host", "evil"),
			want: "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
		},
		{
			name: "host field is kept without authority",
			h:    headersOf(":method", "GET", ":path", "/", "host", "b"),
			want: "GET / HTTP/1.1\r\nhost: b\r\n\r\n",
		},
		{
			name: "empty host without authority or host field",
			h:    headersOf(":method", "GET", ":path", "/"),
			want: "GET / HTTP/1.1\r\nhost: \r\n\r\n",
		},
		{
			name: "connect",
			h:    headersOf(":method", "CONNECT", ":authority", "db:5432"),
			want: "CONNECT db:5432 HTTP/1.1\r\nhost: db:5432\r\n\r\n",
		},
		{
			name: "no path",
			h:    headersOf(":method", "GET", ":authority", "a"),
			want: "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
		},
		{
			name: "scheme pseudo-header is not a field",
			h:    headersOf(":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/"),
			want: "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
		},
		{
			name: "injection is neutralised",
			h: headersOf(":method", "GET", ":authority", "a\r\nx: y", ":path", "/a b\r\nc",
				"x-v", "1\r\n\r\nGET /smuggled HTTP/1.1", "bad name", "v", "ok", "\tv\x7f"),
			want: "GET /a%20b%0D%0Ac HTTP/1.1\r\nhost: a  x: y\r\nx-v: 1    GET /smuggled HTTP/1.1\r\nok: \tv \r\n\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendRequestHead([]byte("prefix:"), tc.h, tc.f, tc.cl))
			if got != "prefix:"+tc.want {
				t.Errorf("got  %q\nwant %q", got, "prefix:"+tc.want)
			}
		})
	}
}

func TestAppendResponseHead(t *testing.T) {
	tests := []struct {
		name  string
		h     *protocol.Headers
		minor int
		f     Framing
		cl    int64
		want  string
	}{
		{
			name: "ok", minor: 1, f: FramingLength, cl: 2,
			h:    headersOf(":status", "200", "content-type", "text/plain", "content-length", "3"),
			want: "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n",
		},
		{
			name: "http/1.0 until close", minor: 0, f: FramingUntilClose,
			h:    headersOf(":status", "404", "transfer-encoding", "chunked"),
			want: "HTTP/1.0 404 Not Found\r\n\r\n",
		},
		{
			name: "head response keeps content-length", minor: 1, f: FramingNone,
			h:    headersOf(":status", "200", "content-length", "1234"),
			want: "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
		},
		{
			name: "chunked", minor: 1, f: FramingChunked,
			h:    headersOf(":status", "502"),
			want: "HTTP/1.1 502 Bad Gateway\r\ntransfer-encoding: chunked\r\n\r\n",
		},
		{
			name: "unknown status", minor: 1, f: FramingNone,
			h:    headersOf(":status", "599"),
			want: "HTTP/1.1 599 Unknown\r\n\r\n",
		},
		{
			name: "missing status", minor: 1, f: FramingNone,
			h:    headersOf("x", "y"),
			want: "HTTP/1.1 500 Internal Server Error\r\nx: y\r\n\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendResponseHead(nil, tc.h, tc.minor, tc.f, tc.cl))
			if got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestAppendChunk(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"empty chunk appends nothing", AppendChunk([]byte("x"), nil), "x"},
		{"small", AppendChunk(nil, []byte("hello")), "5\r\nhello\r\n"},
		{"hex size", AppendChunk(nil, make([]byte, 26)), "1a\r\n" + string(make([]byte, 26)) + "\r\n"},
		{"last chunk", AppendLastChunk(nil, nil), "0\r\n\r\n"},
		{"last chunk, no trailers", AppendLastChunk(nil, headersOf()), "0\r\n\r\n"},
		{
			"last chunk with trailers, framing and host dropped",
			AppendLastChunk(nil, headersOf("grpc-status", "0", "content-length", "1", "transfer-encoding", "x", "host", "h", ":status", "200")),
			"0\r\ngrpc-status: 0\r\n\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

// TestRequestRoundTrip parses, encodes and parses again: the fields come
// back equal (framing fields are the encoder's and may move to the end).
func TestRequestRoundTrip(t *testing.T) {
	for _, in := range []string{
		benchRequest,
		rawHead("POST /up HTTP/1.1", "Host: a", "Content-Length: 3", "X-A: 1", "X-A: 2"),
		rawHead("POST /up HTTP/1.1", "Transfer-Encoding: chunked", "Host: a", "Expect: 100-continue"),
		rawHead("GET http://h.example:8080?q HTTP/1.1", "Host: h.example:8080", "Via: 1.1 x"),
		rawHead("CONNECT h:443 HTTP/1.1", "Host: h:443"),
		rawHead("OPTIONS * HTTP/1.1", "Host: a"),
		rawHead("GET /old HTTP/1.0", "User-Agent: x"),
	} {
		var h1, h2 protocol.Headers
		_, info1, err := ParseRequestHead([]byte(in), &h1, Limits{})
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		out := AppendRequestHead(nil, &h1, info1.Framing, info1.ContentLength)
		_, info2, err := ParseRequestHead(out, &h2, Limits{})
		if err != nil {
			t.Fatalf("%q: re-parse of %q: %v", in, out, err)
		}
		if !sameRequest(&h1, &h2) || info1.Framing != info2.Framing || info1.ContentLength != info2.ContentLength {
			t.Errorf("%q:\nfirst  %q %+v\nsecond %q %+v", in, listFields(&h1), info1, listFields(&h2), info2)
		}
	}
}

// sameRequest compares method, path, authority (absent equals empty: the
// encoder writes an empty Host) and the non-framing fields in order.
func sameRequest(a, b *protocol.Headers) bool {
	return string(a.Method()) == string(b.Method()) &&
		string(a.Path()) == string(b.Path()) &&
		string(a.Host()) == string(b.Host()) &&
		reflect.DeepEqual(plainFields(a), plainFields(b))
}

func plainFields(h *protocol.Headers) []string {
	var out []string
	h.Visit(func(name, value []byte) bool {
		switch string(name) {
		case "transfer-encoding", "content-length":
		default:
			if name[0] != ':' {
				out = append(out, string(name)+": "+string(value))
			}
		}
		return true
	})
	return out
}

func TestAppendAllocs(t *testing.T) {
	var req, resp protocol.Headers
	if _, _, err := ParseRequestHead([]byte(benchRequest), &req, Limits{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ParseResponseHead([]byte(benchResponse), &resp, Limits{}, false, false); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 0, 4096)
	payload := make([]byte, 1000)
	allocs := testing.AllocsPerRun(100, func() {
		b := AppendRequestHead(dst[:0], &req, FramingChunked, -1)
		b = AppendResponseHead(b, &resp, 1, FramingLength, 12345)
		b = AppendChunk(b, payload)
		AppendLastChunk(b, &resp)
	})
	if allocs != 0 {
		t.Errorf("%v allocs, want 0", allocs)
	}
}

func TestStatusText(t *testing.T) {
	for code, want := range map[int]string{
		100: "Continue", 200: "OK", 204: "No Content", 301: "Moved Permanently",
		404: "Not Found", 431: "Request Header Fields Too Large", 502: "Bad Gateway",
		505: "HTTP Version Not Supported", 0: "", 299: "", 600: "", 999: "",
	} {
		if got := StatusText(code); got != want {
			t.Errorf("StatusText(%d) = %q, want %q", code, got, want)
		}
	}
}

// TestAppendMethodCannotSplitTheLine: a method that is not a token (no
// decoder produces one, but filters may set it) is percent-encoded.
func TestAppendMethodCannotSplitTheLine(t *testing.T) {
	var h protocol.Headers
	h.Set(protocol.Method, "GET /admin HTTP/1.1\r\nx:")
	h.Set(protocol.Path, "/public")
	h.Set(protocol.Authority, "a")
	got := string(AppendRequestHead(nil, &h, FramingNone, -1))
	want := "GET%20%2Fadmin%20HTTP%2F1.1%0D%0Ax%3A /public HTTP/1.1\r\nhost: a\r\n\r\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
