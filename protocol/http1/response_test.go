package http1

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/straitproxy/strait/protocol"
)

func TestParseResponseHeadGood(t *testing.T) {
	tests := []struct {
		name          string
		in            string
		head, connect bool
		want          []string
		info          ResponseInfo
	}{
		{
			name: "ok with content-length",
			in:   rawHead("HTTP/1.1 200 OK", "Content-Type: text/plain", "Content-Length: 5"),
			want: []string{":status: 200", "content-type: text/plain", "content-length: 5"},
			info: ResponseInfo{Status: 200, Framing: FramingLength, ContentLength: 5, Minor: 1, KeepAlive: true},
		},
		{
			name: "no reason phrase",
			in:   rawHead("HTTP/1.1 404", "Content-Length: 0"),
			want: []string{":status: 404", "content-length: 0"},
			info: ResponseInfo{Status: 404, Framing: FramingLength, ContentLength: 0, Minor: 1, KeepAlive: true},
		},
		{
			name: "empty reason phrase",
			in:   rawHead("HTTP/1.1 503 ", "Content-Length: 0"),
			want: []string{":status: 503", "content-length: 0"},
			info: ResponseInfo{Status: 503, Framing: FramingLength, ContentLength: 0, Minor: 1, KeepAlive: true},
		},
		{
			name: "reason with tab and obs-text",
			in:   rawHead("HTTP/1.1 200 Tr\xe8s\tbien", "Content-Length: 0"),
			want: []string{":status: 200", "content-length: 0"},
			info: ResponseInfo{Status: 200, Framing: FramingLength, ContentLength: 0, Minor: 1, KeepAlive: true},
		},
		{
			name: "chunked",
			in:   rawHead("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"),
			want: []string{":status: 200", "transfer-encoding: chunked"},
			info: ResponseInfo{Status: 200, Framing: FramingChunked, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "no framing reads until close",
			in:   rawHead("HTTP/1.1 200 OK", "Server: x"),
			want: []string{":status: 200", "server: x"},
			info: ResponseInfo{Status: 200, Framing: FramingUntilClose, ContentLength: -1, Minor: 1},
		},
		{
			name: "identical duplicate content-length",
			in:   rawHead("HTTP/1.1 200 OK", "Content-Length: 7", "Content-Length: 7"),
			want: []string{":status: 200", "content-length: 7", "content-length: 7"},
			info: ResponseInfo{Status: 200, Framing: FramingLength, ContentLength: 7, Minor: 1, KeepAlive: true},
		},
		{
			name: "head response keeps content-length field",
			in:   rawHead("HTTP/1.1 200 OK", "Content-Length: 1234"),
			head: true,
			want: []string{":status: 200", "content-length: 1234"},
			info: ResponseInfo{Status: 200, Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "204",
			in:   rawHead("HTTP/1.1 204 No Content"),
			want: []string{":status: 204"},
			info: ResponseInfo{Status: 204, Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "304 with content-length",
			in:   rawHead("HTTP/1.1 304 Not Modified", "Content-Length: 99"),
			want: []string{":status: 304", "content-length: 99"},
			info: ResponseInfo{Status: 304, Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "100 continue",
			in:   rawHead("HTTP/1.1 100 Continue"),
			want: []string{":status: 100"},
			info: ResponseInfo{Status: 100, Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name: "101 switching protocols",
			in:   rawHead("HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: websocket"),
			want: []string{":status: 101", "connection: Upgrade", "upgrade: websocket"},
			info: ResponseInfo{Status: 101, Framing: FramingNone, ContentLength: -1, Minor: 1, KeepAlive: true},
		},
		{
			name:    "connect 200 is a tunnel, framing fields ignored",
			in:      rawHead("HTTP/1.1 200 Connection Established", "Content-Length: 5", "Transfer-Encoding: chunked"),
			connect: true,
			want:    []string{":status: 200", "content-length: 5", "transfer-encoding: chunked"},
			info:    ResponseInfo{Status: 200, Framing: FramingUntilClose, ContentLength: -1, Minor: 1},
		},
		{
			name:    "connect refused has a body",
			in:      rawHead("HTTP/1.1 407 Proxy Authentication Required", "Content-Length: 2"),
			connect: true,
			want:    []string{":status: 407", "content-length: 2"},
			info:    ResponseInfo{Status: 407, Framing: FramingLength, ContentLength: 2, Minor: 1, KeepAlive: true},
		},
		{
			name: "http/1.0 keep-alive",
			in:   rawHead("HTTP/1.0 200 OK", "Connection: keep-alive", "Content-Length: 1"),
			want: []string{":status: 200", "connection: keep-alive", "content-length: 1"},
			info: ResponseInfo{Status: 200, Framing: FramingLength, ContentLength: 1, KeepAlive: true},
		},
		{
			name: "connection close",
			in:   rawHead("HTTP/1.1 200 OK", "Connection: close", "Content-Length: 1"),
			want: []string{":status: 200", "connection: close", "content-length: 1"},
			info: ResponseInfo{Status: 200, Framing: FramingLength, ContentLength: 1, Minor: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h protocol.Headers
			n, info, err := ParseResponseHead([]byte(tc.in+"body"), &h, Limits{}, tc.head, tc.connect)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if n != len(tc.in) {
				t.Errorf("n = %d, want %d", n, len(tc.in))
			}
			if info != tc.info {
				t.Errorf("info = %+v\nwant   %+v", info, tc.info)
			}
			if got := listFields(&h); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("fields = %q\nwant     %q", got, tc.want)
			}
		})
	}
}

func TestParseResponseHeadBad(t *testing.T) {
	const ok = "HTTP/1.1 200 OK"
	tests := []struct {
		name string
		in   string
		head bool
	}{
		{"cl and te", rawHead(ok, "Content-Length: 5", "Transfer-Encoding: chunked"), false},
		{"cl and te on head response", rawHead(ok, "Content-Length: 5", "Transfer-Encoding: chunked"), true},
		{"differing content-length", rawHead(ok, "Content-Length: 5", "Content-Length: 6"), false},
		{"bad content-length", rawHead(ok, "Content-Length: 5x"), false},
		{"signed content-length", rawHead(ok, "Content-Length: +5"), false},
		{"te gzip", rawHead(ok, "Transfer-Encoding: gzip"), false},
		{"te gzip then chunked", rawHead(ok, "Transfer-Encoding: gzip, chunked"), false},
		{"te twice", rawHead(ok, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), false},
		{"te in http/1.0", rawHead("HTTP/1.0 200 OK", "Transfer-Encoding: chunked"), false},
		{"bare lf", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", false},
		{"bare lf in field line", "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", false},
		{"bare cr in reason", rawHead("HTTP/1.1 200 O\rK"), false},
		{"nul in reason", rawHead("HTTP/1.1 200 O\x00K"), false},
		{"nul in value", rawHead(ok, "X: \x00"), false},
		{"obs-fold", rawHead(ok, "X: a", " b"), false},
		{"space before colon", rawHead(ok, "Content-Length : 5"), false},
		{"two-digit status", rawHead("HTTP/1.1 20 OK"), false},
		{"four-digit status", rawHead("HTTP/1.1 2000 OK"), false},
		{"status below 100", rawHead("HTTP/1.1 099 Odd"), false},
		{"status above 599", rawHead("HTTP/1.1 600 Odd"), false},
		{"letters in status", rawHead("HTTP/1.1 2x0 OK"), false},
		{"http/2", rawHead("HTTP/2 200 OK"), false},
		{"http/2.0", rawHead("HTTP/2.0 200 OK"), false},
		{"two spaces", rawHead("HTTP/1.1  200 OK"), false},
		{"tab separator", rawHead("HTTP/1.1\t200 OK"), false},
		{"leading empty line", "\r\n" + rawHead(ok), false},
		{"not http", rawHead("ICY 200 OK"), false},
		{"too many fields", rawHead(ok, manyFields(DefaultMaxHeaders+1)...), false},
		{"too large", rawHead(ok, "X: "+strings.Repeat("x", 61<<10)), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h protocol.Headers
			_, _, err := ParseResponseHead([]byte(tc.in), &h, Limits{}, tc.head, false)
			var e *Error
			if !errors.As(err, &e) || e.Status != 502 {
				t.Fatalf("err = %v, want *Error 502", err)
			}
		})
	}
}

func TestParseResponseHeadIncremental(t *testing.T) {
	in := rawHead("HTTP/1.1 200 OK", "Content-Length: 3", "X: y")
	var h protocol.Headers
	for i := 0; i < len(in); i++ {
		if _, _, err := ParseResponseHead([]byte(in[:i]), &h, Limits{}, false, false); err != ErrNeedMore {
			t.Fatalf("prefix %d: err = %v, want ErrNeedMore", i, err)
		}
	}
	if n, _, err := ParseResponseHead([]byte(in), &h, Limits{}, false, false); err != nil || n != len(in) {
		t.Fatalf("n = %d, err = %v", n, err)
	}
}

func TestParseResponseHeadAllocs(t *testing.T) {
	var h protocol.Headers
	buf := []byte(benchResponse)
	if _, _, err := ParseResponseHead(buf, &h, Limits{}, false, false); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		ParseResponseHead(buf, &h, Limits{}, false, false)
	})
	if allocs != 0 {
		t.Errorf("%v allocs per parse, want 0", allocs)
	}
}
