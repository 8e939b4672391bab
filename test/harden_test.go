package test

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// lineUpstream is an HTTP/1.1 upstream on a raw socket that records each
// request's head as it arrived (request line first) and answers 200 "ok".
type lineUpstream struct {
	addr  string
	mu    sync.Mutex
	heads []string
}

func startLineUpstream(t *testing.T) *lineUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &lineUpstream{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

func (u *lineUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		u.mu.Lock()
		u.heads = append(u.heads, head.String())
		u.mu.Unlock()
		if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")); err != nil {
			return
		}
	}
}

func (u *lineUpstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.heads...)
}

// outcome reads frames until stream id is answered: ":status" of its
// response, or "RST_STREAM <code>".
func (r *h2Raw) outcome(id uint32) string {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "RST_STREAM " + f.ErrCode.String()
			}
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.HeadersFrame:
			fields, err := r.dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				r.t.Fatal(err)
			}
			if f.StreamID != id {
				continue
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					return hf.Value
				}
			}
		}
	}
}

// TestH2RequestValidation (issue 11, items 1 and 2): an HTTP/2 request
// whose :method is not a token, whose :authority or Host is not a host,
// or whose :path or :scheme is not what the HTTP/1.1 parser would take
// is refused with RST_STREAM PROTOCOL_ERROR and never reaches the
// upstream; the connection keeps serving.
func TestH2RequestValidation(t *testing.T) {
	up := startLineUpstream(t)
	p := startProxy(t, httpBootstrap(up.addr, routeCfg{}, ""))
	r := dialH2(t, p.addr("ingress"))
	field := func(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }
	send := func(id uint32, fields ...hpack.HeaderField) string {
		r.hbuf.Reset()
		for _, f := range fields {
			r.enc.WriteField(f)
		}
		if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		return r.outcome(id)
	}
	req := func(method, scheme, auth, path string, extra ...hpack.HeaderField) []hpack.HeaderField {
		return append([]hpack.HeaderField{field(":method", method), field(":scheme", scheme), field(":authority", auth), field(":path", path)}, extra...)
	}
	cases := []struct {
		name   string
		fields []hpack.HeaderField
	}{
		{"method with a request line", req("GET /admin HTTP/1.1", "http", "test", "/public")},
		{"method with a space", req("GE T", "http", "test", "/")},
		{"empty method", req("", "http", "test", "/")},
		{"authority with a space", req("GET", "http", "a b", "/")},
		{"authority with a path", req("GET", "http", "evil/x", "/")},
		{"authority with userinfo", req("GET", "http", "u@evil", "/")},
		{"host with a space", append(req("GET", "http", "test", "/")[:2], field(":path", "/"), field("host", "a b"))},
		{"path with a fragment", req("GET", "http", "test", "/x#frag")},
		{"path with a space", req("GET", "http", "test", "/x y")},
		{"path with 0xff", req("GET", "http", "test", "/x\xff")},
		{"path not origin-form", req("GET", "http", "test", "x")},
		{"asterisk without OPTIONS", req("GET", "http", "test", "*")},
		{"scheme with a space", req("GET", "ht tp", "test", "/")},
		{"CONNECT to a host without a port", []hpack.HeaderField{field(":method", "CONNECT"), field(":authority", "evil/x")}},
	}
	id := uint32(1)
	for _, c := range cases {
		if got := send(id, c.fields...); got != "RST_STREAM PROTOCOL_ERROR" {
			t.Errorf("%s: %s, want RST_STREAM PROTOCOL_ERROR", c.name, got)
		}
		id += 2
	}
	if got := send(id, req("GET", "http", "test", "/ok?a=%20")...); got != "200" {
		t.Fatalf("a good request after the bad ones: %s", got)
	}
	heads := up.received()
	if len(heads) != 1 || !strings.HasPrefix(heads[0], "GET /ok?a=%20 HTTP/1.1\r\n") {
		t.Fatalf("the upstream received %q, want only the good request", heads)
	}
}
