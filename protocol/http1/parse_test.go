package http1

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/straitproxy/strait/protocol"
)

// rawHead builds a message head: the start line, the field lines, CRLF.
func rawHead(start string, fields ...string) string {
	var b strings.Builder
	b.WriteString(start + "\r\n")
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// listFields lists the live fields of h as "name: value".
func listFields(h *protocol.Headers) []string {
	var out []string
	h.Visit(func(name, value []byte) bool {
		out = append(out, string(name)+": "+string(value))
		return true
	})
	return out
}

// manyFields returns n distinct field lines.
func manyFields(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "X-F" + strings.Repeat("a", i%7) + ": " + strings.Repeat("v", i%5)
	}
	return out
}

func TestParseRequestHeadGood(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
		info RequestInfo // HeadLen is checked separately
	}{
		{
			name: "simple get",
			in:   rawHead("GET /index.html?q=1 HTTP/1.1", "Host: example.com", "User-Agent: curl/8.5.0", "Accept: */*"),
			want: []string{":method: GET", ":authority: example.com", ":path: /index.html?q=1", "user-agent: curl/8.5.0", "accept: */*"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "content-length body",
			in:   rawHead("POST /submit HTTP/1.1", "Host: a", "Content-Length: 5"),
			want: []string{":method: POST", ":authority: a", ":path: /submit", "content-length: 5"},
			info: RequestInfo{Framing: FramingLength, ContentLength: 5, Minor: 1, KeepAlive: true},
		},
		{
			name: "content-length zero",
			in:   rawHead("POST / HTTP/1.1", "Host: a", "Content-Length: 0"),
			want: []string{":method: POST", ":authority: a", ":path: /", "content-length: 0"},
			info: RequestInfo{Framing: FramingLength, ContentLength: 0, Minor: 1, KeepAlive: true},
		},
		{
			name: "content-length 18 digits with leading zeros",
			in:   rawHead("POST / HTTP/1.1", "Host: a", "Content-Length: 000000000000000042"),
			want: []string{":method: POST", ":authority: a", ":path: /", "content-length: 000000000000000042"},
			info: RequestInfo{Framing: FramingLength, ContentLength: 42, Minor: 1, KeepAlive: true},
		},
		{
			name: "content-length trailing ows is trimmed",
			in:   rawHead("POST / HTTP/1.1", "Host: a", "Content-Length: 5 "),
			want: []string{":method: POST", ":authority: a", ":path: /", "content-length: 5"},
			info: RequestInfo{Framing: FramingLength, ContentLength: 5, Minor: 1, KeepAlive: true},
		},
		{
			name: "chunked is kept in fields",
			in:   rawHead("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"),
			want: []string{":method: POST", ":authority: a", ":path: /", "transfer-encoding: chunked"},
			info: RequestInfo{Framing: FramingChunked, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "chunked after htab ows",
			in:   rawHead("POST / HTTP/1.1", "Host: a", "Transfer-Encoding:\tchunked"),
			want: []string{":method: POST", ":authority: a", ":path: /", "transfer-encoding: chunked"},
			info: RequestInfo{Framing: FramingChunked, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "chunked in upper case",
			in:   rawHead("POST / HTTP/1.1", "Host: a", "TRANSFER-ENCODING: CHUNKED"),
			want: []string{":method: POST", ":authority: a", ":path: /", "transfer-encoding: CHUNKED"},
			info: RequestInfo{Framing: FramingChunked, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "http/1.0 without host",
			in:   rawHead("GET / HTTP/1.0", "Accept: */*"),
			want: []string{":method: GET", ":path: /", "accept: */*"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 0},
		},
		{
			name: "http/1.0 keep-alive",
			in:   rawHead("GET / HTTP/1.0", "Host: a", "Connection: Keep-Alive"),
			want: []string{":method: GET", ":authority: a", ":path: /", "connection: Keep-Alive"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 0, KeepAlive: true},
		},
		{
			name: "http/1.1 connection close",
			in:   rawHead("GET / HTTP/1.1", "Host: a", "Connection: keep-alive, close"),
			want: []string{":method: GET", ":authority: a", ":path: /", "connection: keep-alive, close"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1},
		},
		{
			name: "leading empty lines are skipped",
			in:   "\r\n\r\n" + rawHead("GET / HTTP/1.1", "Host: a"),
			want: []string{":method: GET", ":authority: a", ":path: /"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "absolute-form",
			in:   rawHead("GET http://Example.com:8080/p/q?x=1 HTTP/1.1", "Host: ignored.example"),
			want: []string{":method: GET", ":scheme: http", ":authority: Example.com:8080", ":path: /p/q?x=1"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "absolute-form https upper case, empty path",
			in:   rawHead("GET HTTPS://a.example HTTP/1.1", "Host: a.example"),
			want: []string{":method: GET", ":scheme: https", ":authority: a.example", ":path: /"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "absolute-form query without path",
			in:   rawHead("GET http://a?x=1 HTTP/1.1", "Host: a"),
			want: []string{":method: GET", ":scheme: http", ":authority: a", ":path: /?x=1"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "absolute-form options with empty path",
			in:   rawHead("OPTIONS http://a:81 HTTP/1.1", "Host: a:81"),
			want: []string{":method: OPTIONS", ":scheme: http", ":authority: a:81", ":path: *"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "asterisk-form",
			in:   rawHead("OPTIONS * HTTP/1.1", "Host: a"),
			want: []string{":method: OPTIONS", ":authority: a", ":path: *"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "authority-form connect",
			in:   rawHead("CONNECT db.internal:5432 HTTP/1.1", "Host: db.internal:5432"),
			want: []string{":method: CONNECT", ":authority: db.internal:5432"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "connect to ipv6 literal",
			in:   rawHead("CONNECT [2001:db8::1]:443 HTTP/1.1", "Host: [2001:db8::1]:443"),
			want: []string{":method: CONNECT", ":authority: [2001:db8::1]:443"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "expect 100-continue",
			in:   rawHead("PUT /f HTTP/1.1", "Host: a", "Content-Length: 3", "Expect: 100-Continue"),
			want: []string{":method: PUT", ":authority: a", ":path: /f", "content-length: 3", "expect: 100-Continue"},
			info: RequestInfo{Framing: FramingLength, ContentLength: 3, Minor: 1, KeepAlive: true, ExpectContinue: true},
		},
		{
			name: "expect 100-continue ignored in http/1.0",
			in:   rawHead("PUT /f HTTP/1.0", "Content-Length: 3", "Expect: 100-continue"),
			want: []string{":method: PUT", ":path: /f", "content-length: 3", "expect: 100-continue"},
			info: RequestInfo{Framing: FramingLength, ContentLength: 3, Minor: 0},
		},
		{
			name: "websocket upgrade",
			in:   rawHead("GET /ws HTTP/1.1", "Host: a", "Connection: keep-alive, Upgrade", "Upgrade: websocket"),
			want: []string{":method: GET", ":authority: a", ":path: /ws", "connection: keep-alive, Upgrade", "upgrade: websocket"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true, Upgrade: true},
		},
		{
			name: "upgrade header without connection token",
			in:   rawHead("GET / HTTP/1.1", "Host: a", "Upgrade: h2c"),
			want: []string{":method: GET", ":authority: a", ":path: /", "upgrade: h2c"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "ows trimmed, inner space kept, obs-text kept, empty value",
			in:   rawHead("GET / HTTP/1.1", "Host:a", "X-A: \t hello  world \t", "X-Utf8: caf\xc3\xa9", "X-Empty:"),
			want: []string{":method: GET", ":authority: a", ":path: /", "x-a: hello  world", "x-utf8: caf\xc3\xa9", "x-empty: "},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "empty host",
			in:   rawHead("GET / HTTP/1.1", "Host:"),
			want: []string{":method: GET", ":authority: ", ":path: /"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "extension method and raw utf-8 in path",
			in:   rawHead("PURGE /caf\xc3\xa9 HTTP/1.1", "Host: a"),
			want: []string{":method: PURGE", ":authority: a", ":path: /caf\xc3\xa9"},
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "exactly max headers",
			in:   rawHead("GET / HTTP/1.1", append([]string{"Host: a"}, manyFields(DefaultMaxHeaders-1)...)...),
			want: nil, // only the count is checked below
			info: RequestInfo{Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h protocol.Headers
			in := tc.in + "BODY" // bytes after the head are not consumed
			n, info, err := ParseRequestHead([]byte(in), &h, Limits{})
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if n != len(tc.in) || info.HeadLen != n {
				t.Errorf("n = %d, HeadLen = %d, want %d", n, info.HeadLen, len(tc.in))
			}
			info.HeadLen = 0
			if info != tc.info {
				t.Errorf("info = %+v\nwant   %+v", info, tc.info)
			}
			if tc.want == nil {
				if h.Len() != DefaultMaxHeaders+2 { // :method, :path, :authority; Host is not a field
					t.Errorf("fields = %d", h.Len())
				}
				return
			}
			if got := listFields(&h); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("fields = %q\nwant     %q", got, tc.want)
			}
		})
	}
}

func TestParseRequestHeadBad(t *testing.T) {
	const get = "GET / HTTP/1.1"
	tests := []struct {
		name   string
		in     string
		status int
	}{
		// Request smuggling: conflicting or obfuscated framing.
		{"cl.te", rawHead("POST / HTTP/1.1", "Host: a", "Content-Length: 6", "Transfer-Encoding: chunked"), 400},
		{"te.cl", rawHead("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Content-Length: 6"), 400},
		{"te xchunked", rawHead(get, "Host: a", "Transfer-Encoding: xchunked"), 501},
		{"te space before colon", rawHead(get, "Host: a", "Transfer-Encoding : chunked"), 400},
		{"te twice", rawHead(get, "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: x"), 400},
		{"te twice both chunked", rawHead(get, "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 400},
		{"te chunked then identity", rawHead(get, "Host: a", "Transfer-Encoding: chunked, identity"), 400},
		{"te obs-fold", rawHead(get, "Host: a", "Transfer-Encoding:", " chunked"), 400},
		{"te identity", rawHead(get, "Host: a", "Transfer-Encoding: identity"), 501},
		{"te gzip then chunked", rawHead(get, "Host: a", "Transfer-Encoding: gzip, chunked"), 501},
		{"te chunked with parameter", rawHead(get, "Host: a", "Transfer-Encoding: chunked;x"), 400},
		{"te chunked trailing comma", rawHead(get, "Host: a", "Transfer-Encoding: chunked,"), 400},
		{"te empty list element", rawHead(get, "Host: a", "Transfer-Encoding: , chunked"), 400},
		{"te empty", rawHead(get, "Host: a", "Transfer-Encoding:"), 400},
		{"te chunked twice in list", rawHead(get, "Host: a", "Transfer-Encoding: chunked, chunked"), 400},
		{"te in http/1.0", rawHead("POST / HTTP/1.0", "Transfer-Encoding: chunked"), 400},
		{"te with vertical tab", rawHead(get, "Host: a", "Transfer-Encoding: \x0bchunked"), 400},
		{"cl duplicate same", rawHead(get, "Host: a", "Content-Length: 5", "Content-Length: 5"), 400},
		{"cl duplicate different", rawHead(get, "Host: a", "Content-Length: 5", "Content-Length: 6"), 400},
		{"cl plus sign", rawHead(get, "Host: a", "Content-Length: +5"), 400},
		{"cl minus sign", rawHead(get, "Host: a", "Content-Length: -5"), 400},
		{"cl inner space", rawHead(get, "Host: a", "Content-Length: 5 5"), 400},
		{"cl hex", rawHead(get, "Host: a", "Content-Length: 0x5"), 400},
		{"cl comma list", rawHead(get, "Host: a", "Content-Length: 5, 5"), 400},
		{"cl empty", rawHead(get, "Host: a", "Content-Length:"), 400},
		{"cl 19 digits", rawHead(get, "Host: a", "Content-Length: 1000000000000000000"), 400},
		{"cl space before colon", rawHead(get, "Host: a", "Content-Length : 5"), 400},

		// Line endings.
		{"bare lf ends request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
		{"bare lf ends field line", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400},
		{"bare lf ends head", "GET / HTTP/1.1\nHost: a\n\n", 400},
		{"bare lf inside head before crlfcrlf", "GET / HTTP/1.1\r\nX: a\nY: b\r\nHost: a\r\n\r\n", 400},
		{"bare lf as empty line", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"bare cr in value", rawHead(get, "Host: a", "X: a\rb"), 400},
		{"bare cr before crlf", rawHead(get, "Host: a", "X: a\r"), 400},
		{"bare cr in name", rawHead(get, "Host: a", "X\r: a"), 400},
		{"bare cr in request line", rawHead("GET /\r HTTP/1.1", "Host: a"), 400},
		{"too many empty lines", strings.Repeat("\r\n", maxEmptyLines+1) + rawHead(get, "Host: a"), 400},

		// Field lines.
		{"nul in value", rawHead(get, "Host: a", "X: a\x00b"), 400},
		{"del in value", rawHead(get, "Host: a", "X: a\x7fb"), 400},
		{"space in name", rawHead(get, "Host: a", "X Foo: a"), 400},
		{"tab before colon", rawHead(get, "Host: a", "X\t: a"), 400},
		{"empty name", rawHead(get, "Host: a", ": a"), 400},
		{"missing colon", rawHead(get, "Host: a", "X-Foo"), 400},
		{"non-token name", rawHead(get, "Host: a", "X(Foo): a"), 400},
		{"obs-fold", rawHead(get, "Host: a", "X: a", "\tb"), 400},
		{"obs-fold first line", rawHead(get, " Host: a"), 400},

		// Host.
		{"missing host", rawHead(get, "Accept: */*"), 400},
		{"duplicate host", rawHead(get, "Host: a", "Host: b"), 400},
		{"duplicate host in http/1.0", rawHead("GET / HTTP/1.0", "Host: a", "Host: a"), 400},
		{"host with space", rawHead(get, "Host: a b"), 400},
		{"host with userinfo", rawHead(get, "Host: u@a"), 400},
		{"host with path", rawHead(get, "Host: a/b"), 400},

		// Request line.
		{"http/2.0", rawHead("GET / HTTP/2.0", "Host: a"), 505},
		{"http/0.9 line then more", "GET /\r\nHost: a\r\n", 400},
		{"http/0.9 line", rawHead("GET /", "Host: a"), 400},
		{"lowercase version", rawHead("GET / http/1.1", "Host: a"), 400},
		{"short version", rawHead("GET / HTTP/1", "Host: a"), 400},
		{"trailing space after version", rawHead("GET / HTTP/1.1 ", "Host: a"), 400},
		{"two spaces after method", rawHead("GET  / HTTP/1.1", "Host: a"), 400},
		{"two spaces after target", rawHead("GET /  HTTP/1.1", "Host: a"), 400},
		{"space in target", rawHead("GET /a b HTTP/1.1", "Host: a"), 400},
		{"tab as separator", rawHead("GET\t/ HTTP/1.1", "Host: a"), 400},
		{"empty method", rawHead(" / HTTP/1.1", "Host: a"), 400},
		{"non-token method", rawHead("G@T / HTTP/1.1", "Host: a"), 400},
		{"ctl in target", rawHead("GET /a\x01 HTTP/1.1", "Host: a"), 400},
		{"fragment in target", rawHead("GET /a#b HTTP/1.1", "Host: a"), 400},
		{"asterisk without options", rawHead("GET * HTTP/1.1", "Host: a"), 400},
		{"connect with origin-form", rawHead("CONNECT / HTTP/1.1", "Host: a"), 400},
		{"connect without port", rawHead("CONNECT a HTTP/1.1", "Host: a"), 400},
		{"connect with empty port", rawHead("CONNECT a: HTTP/1.1", "Host: a"), 400},
		{"authority-form without connect", rawHead("GET a:80 HTTP/1.1", "Host: a"), 400},
		{"absolute-form with userinfo", rawHead("GET http://u:p@a/ HTTP/1.1", "Host: a"), 400},
		{"absolute-form empty authority", rawHead("GET http:///p HTTP/1.1", "Host: a"), 400},
		{"absolute-form other scheme", rawHead("GET ftp://a/ HTTP/1.1", "Host: a"), 400},

		// Expect.
		{"unknown expectation", rawHead(get, "Host: a", "Expect: 200-ok"), 417},
		{"two expectations", rawHead(get, "Host: a", "Expect: 100-continue", "Expect: 100-continue"), 417},

		// Limits.
		{"101 fields", rawHead(get, append([]string{"Host: a"}, manyFields(DefaultMaxHeaders)...)...), 431},
		{"61 KiB head", rawHead(get, "Host: a", "X-Big: "+strings.Repeat("b", 61<<10)), 431},
		{"61 KiB incomplete head", get + "\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 61<<10), 431},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h protocol.Headers
			_, _, err := ParseRequestHead([]byte(tc.in), &h, Limits{})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error %d", err, tc.status)
			}
			if e.Status != tc.status {
				t.Errorf("status = %d (%s), want %d", e.Status, e.Reason, tc.status)
			}
		})
	}
}

func TestParseRequestHeadLimits(t *testing.T) {
	in := rawHead("GET / HTTP/1.1", "Host: a", "X: 1", "Y: 2")
	tests := []struct {
		name   string
		lim    Limits
		status int // 0 means accepted
	}{
		{"defaults", Limits{}, 0},
		{"head exactly at limit", Limits{MaxHeaderBytes: len(in)}, 0},
		{"head one byte over", Limits{MaxHeaderBytes: len(in) - 1}, 431},
		{"fields exactly at limit", Limits{MaxHeaders: 3}, 0},
		{"one field over", Limits{MaxHeaders: 2}, 431},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h protocol.Headers
			_, _, err := ParseRequestHead([]byte(in), &h, tc.lim)
			var e *Error
			switch {
			case tc.status == 0 && err != nil:
				t.Fatalf("err = %v", err)
			case tc.status != 0 && (!errors.As(err, &e) || e.Status != tc.status):
				t.Fatalf("err = %v, want status %d", err, tc.status)
			}
		})
	}
}

// TestParseRequestHeadIncremental feeds requests one byte more at a time:
// every proper prefix needs more, and the whole gives the one-shot result.
func TestParseRequestHeadIncremental(t *testing.T) {
	for _, in := range []string{
		"\r\n" + rawHead("GET /a?b HTTP/1.1", "Host: a", "X-Y: z"),
		rawHead("POST /u HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Connection: close"),
		rawHead("GET http://a/ HTTP/1.0"),
	} {
		var want, h protocol.Headers
		wn, winfo, err := ParseRequestHead([]byte(in), &want, Limits{})
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		for i := 0; i < len(in); i++ {
			if _, _, err := ParseRequestHead([]byte(in[:i]), &h, Limits{}); err != ErrNeedMore {
				t.Fatalf("%q: prefix %d: err = %v, want ErrNeedMore", in, i, err)
			}
		}
		n, info, err := ParseRequestHead([]byte(in), &h, Limits{})
		if err != nil || n != wn || info != winfo || !reflect.DeepEqual(listFields(&h), listFields(&want)) {
			t.Fatalf("%q: got %d %+v %v %q", in, n, info, err, listFields(&h))
		}
	}
}

// TestParseRequestHeadPartialErrors checks that a head that can never be
// valid fails before it is complete.
func TestParseRequestHeadPartialErrors(t *testing.T) {
	for _, in := range []string{"GET / HTTP/1.1\nHost", "GET /\rX", "\n"} {
		var h protocol.Headers
		_, _, err := ParseRequestHead([]byte(in), &h, Limits{})
		var e *Error
		if !errors.As(err, &e) || e.Status != 400 {
			t.Errorf("%q: err = %v, want 400", in, err)
		}
	}
}

func TestParseRequestHeadAllocs(t *testing.T) {
	for name, in := range map[string]string{
		"origin-form":   benchRequest,
		"absolute-form": rawHead("POST http://a.example/x HTTP/1.1", "Host: a.example", "Transfer-Encoding: chunked"),
		"connect":       rawHead("CONNECT a:443 HTTP/1.1", "Host: a:443"),
	} {
		var h protocol.Headers
		buf := []byte(in)
		if _, _, err := ParseRequestHead(buf, &h, Limits{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		allocs := testing.AllocsPerRun(100, func() {
			ParseRequestHead(buf, &h, Limits{})
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per parse, want 0", name, allocs)
		}
	}
}

func TestLooksLikeRequest(t *testing.T) {
	tests := []struct {
		name            string
		in              string
		match, needMore bool
	}{
		{"empty", "", false, true},
		{"get", "GET / HTTP/1.1", true, false},
		{"method only", "GET", false, true},
		{"method and space", "PROPFIND ", true, false},
		{"lowercase", "get / HTTP/1.1", false, false},
		{"tls client hello", "\x16\x03\x01\x02\x00", false, false},
		{"http/2 preface", "PRI * HTTP/2.0\r\n", true, false},
		{"leading space", " GET /", false, false},
		{"20-letter method", strings.Repeat("A", 20) + " /", true, false},
		{"20 letters, more to come", strings.Repeat("A", 20), false, true},
		{"21-letter method", strings.Repeat("A", 21) + " /", false, false},
		{"digit in method", "GET2 /", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			match, needMore := LooksLikeRequest([]byte(tc.in))
			if match != tc.match || needMore != tc.needMore {
				t.Errorf("= %v, %v; want %v, %v", match, needMore, tc.match, tc.needMore)
			}
		})
	}
}

// TestValidValue checks the word-at-a-time check against the byte table for
// every byte value at every position of a word, and in the tail.
func TestValidValue(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 11; pos++ {
			v := []byte("abcdefghijk")
			v[pos] = byte(c)
			if got, want := validValue(v), validValueBytes(v); got != want {
				t.Fatalf("byte %#x at %d: validValue = %v, want %v", c, pos, got, want)
			}
		}
	}
}

// TestLaterMinorVersions: HTTP/1.2 and later 1.x are handled as 1.1
// (RFC 9110 §6.2), requests and responses.
func TestLaterMinorVersions(t *testing.T) {
	var h protocol.Headers
	_, info, err := ParseRequestHead([]byte(rawHead("GET / HTTP/1.2", "Host: a")), &h, Limits{})
	if err != nil || info.Minor != 1 || !info.KeepAlive {
		t.Fatalf("request: %+v %v", info, err)
	}
	_, rinfo, err := ParseResponseHead([]byte(rawHead("HTTP/1.9 200 OK", "Content-Length: 0")), &h, Limits{}, false, false)
	if err != nil || rinfo.Minor != 1 {
		t.Fatalf("response: %+v %v", rinfo, err)
	}
}

// TestHTTP09Refused: a request line without a version is refused as soon
// as it ends, not left waiting for a blank line.
func TestHTTP09Refused(t *testing.T) {
	var h protocol.Headers
	for _, in := range []string{"GET /\r\n", "GET /\r\nHost: a\r\n", "\r\nGET\r\n"} {
		if _, _, err := ParseRequestHead([]byte(in), &h, Limits{}); err == nil || err == ErrNeedMore {
			t.Errorf("%q: %v, want a 400", in, err)
		}
	}
	if _, _, err := ParseRequestHead([]byte("GET / HTTP/1.1\r\nHo"), &h, Limits{}); err != ErrNeedMore {
		t.Errorf("a good partial head: %v", err)
	}
}
