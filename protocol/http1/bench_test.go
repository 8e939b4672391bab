package http1

import (
	"strings"
	"testing"

	"github.com/straitproxy/strait/protocol"
)

// benchRequest is a browser navigation of about 400 bytes.
var benchRequest = rawHead("GET /products/search?q=proxy&page=2 HTTP/1.1",
	"Host: shop.example.com",
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
	"Accept-Language: en-US,en;q=0.5",
	"Accept-Encoding: gzip, deflate, br, zstd",
	"Connection: keep-alive",
	"Cookie: session=5f2b8c1e9a7d4e3b; theme=dark",
	"Upgrade-Insecure-Requests: 1",
	"Sec-Fetch-Dest: document",
	"Sec-Fetch-Mode: navigate",
)

var benchResponse = rawHead("HTTP/1.1 200 OK",
	"Date: Tue, 25 Nov 2025 19:23:00 GMT",
	"Content-Type: text/html; charset=utf-8",
	"Content-Length: 12345",
	"Cache-Control: private, max-age=0",
	"Server: origin",
	"Vary: Accept-Encoding",
	"Set-Cookie: session=5f2b8c1e9a7d4e3b; Path=/; HttpOnly; Secure",
)

func BenchmarkParseRequestHead(b *testing.B) {
	var h protocol.Headers
	buf := []byte(benchRequest)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseRequestHead(buf, &h, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponseHead(b *testing.B) {
	var h protocol.Headers
	buf := []byte(benchResponse)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseResponseHead(buf, &h, Limits{}, false, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkedDecode decodes a 64 KiB body sent as 4 KiB chunks, all
// in one buffer.
func BenchmarkChunkedDecode(b *testing.B) {
	chunk := []byte(strings.Repeat("x", 4096))
	var body []byte
	for range 16 {
		body = AppendChunk(body, chunk)
	}
	body = AppendLastChunk(body, nil)
	var d BodyDecoder
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		d.Reset(FramingChunked, 0, Limits{})
		for rest := body; !d.Done(); {
			_, n, _, err := d.Decode(rest)
			if err != nil {
				b.Fatal(err)
			}
			rest = rest[n:]
		}
	}
}

func BenchmarkAppendRequestHead(b *testing.B) {
	var h protocol.Headers
	if _, _, err := ParseRequestHead([]byte(benchRequest), &h, Limits{}); err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendRequestHead(dst[:0], &h, FramingNone, -1)
	}
}

func BenchmarkAppendResponseHead(b *testing.B) {
	var h protocol.Headers
	if _, _, err := ParseResponseHead([]byte(benchResponse), &h, Limits{}, false, false); err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendResponseHead(dst[:0], &h, 1, FramingLength, 12345)
	}
}
