package test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Raw is a hand-driven HTTP/2 client connection for attack tests.
type h2Raw struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	dec  *hpack.Decoder
}

func dialH2(t *testing.T, addr string) *h2Raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &h2Raw{t: t, c: c, fr: http2.NewFramer(c, c)}
	r.enc = hpack.NewEncoder(&r.hbuf)
	r.dec = hpack.NewDecoder(4096, nil)
	io.WriteString(c, http2.ClientPreface)
	r.fr.WriteSettings()
	return r
}

// block encodes a GET for path plus extra fields.
func (r *h2Raw) block(path string, extra ...hpack.HeaderField) []byte {
	r.hbuf.Reset()
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "test"}, {Name: ":path", Value: path},
	}, extra...) {
		r.enc.WriteField(f)
	}
	return r.hbuf.Bytes()
}

// waitGoAway reads frames until a GOAWAY (returning its code) or the
// connection closes (ok=false).
func (r *h2Raw) waitGoAway(within time.Duration) (code http2.ErrCode, ok bool) {
	r.c.SetReadDeadline(time.Now().Add(within))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return 0, false
		}
		if ga, isGA := f.(*http2.GoAwayFrame); isGA {
			return ga.ErrCode, true
		}
	}
}

// response reads frames until the response headers of stream id and
// returns its :status.
func (r *h2Raw) response(id uint32) string {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	dec := r.dec
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for stream %d: %v", id, err)
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamID == id {
			fields, err := dec.DecodeFull(h.HeaderBlockFragment())
			if err != nil {
				r.t.Fatal(err)
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					return hf.Value
				}
			}
		} else if h, ok := f.(*http2.HeadersFrame); ok {
			dec.DecodeFull(h.HeaderBlockFragment())
		}
	}
}

// stillServes checks that a fresh client gets answers while (or after)
// another connection attacks.
func stillServes(t *testing.T, base string) {
	t.Helper()
	resp, err := h2cClient().Get(base + "/ok")
	if err != nil {
		t.Fatalf("other clients: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok /ok" {
		t.Fatalf("other clients: %q", b)
	}
}

// floodIsCalmed sends frames with send (its argument counts from 0) until
// it fails or n are sent, expects GOAWAY ENHANCE_YOUR_CALM, and checks
// that other clients are still served.
func floodIsCalmed(t *testing.T, what string, n int, send func(r *h2Raw, i int) error) {
	t.Helper()
	p, addr := attackProxy(t)
	r := dialH2(t, addr)
	go func() {
		for i := range n {
			if send(r, i) != nil {
				return
			}
		}
	}()
	code, ok := r.waitGoAway(10 * time.Second)
	if !ok || code != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("%s: GOAWAY %v (seen %v), want ENHANCE_YOUR_CALM", what, code, ok)
	}
	stillServes(t, p.url("ingress"))
}

func attackProxy(t *testing.T) (*proxy, string) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	return p, p.addr("ingress")
}

// TestH2RapidReset (CVE-2023-44487): a client that opens and resets
// streams as fast as it can is told ENHANCE_YOUR_CALM and dropped.
func TestH2RapidReset(t *testing.T) {
	floodIsCalmed(t, "rapid reset", 10000, func(r *h2Raw, i int) error {
		id := uint32(2*i + 1)
		if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block("/slow/1000"), EndStream: true, EndHeaders: true}); err != nil {
			return err
		}
		return r.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	})
}

// TestH2ContinuationFlood (CVE-2024-27316): a header block that never
// ends is cut off, not buffered.
func TestH2ContinuationFlood(t *testing.T) {
	p, addr := attackProxy(t)
	r := dialH2(t, addr)
	go func() {
		r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block("/x"), EndHeaders: false})
		junk := bytes.Repeat([]byte{0x40, 0x01, 'a', 0x01, 'b'}, 100) // literal fields, tiny each
		for range 100000 {
			if r.fr.WriteContinuation(1, false, junk) != nil {
				return
			}
		}
	}()
	code, ok := r.waitGoAway(10 * time.Second)
	if !ok || (code != http2.ErrCodeEnhanceYourCalm && code != http2.ErrCodeProtocol) {
		t.Fatalf("CONTINUATION flood: GOAWAY %v (seen %v)", code, ok)
	}
	stillServes(t, p.url("ingress"))
}

// TestH2HPACKBomb: a small header block that decodes to a huge header
// list (one large dynamic-table entry referenced many times) is refused
// with 431, and the connection goes on serving.
func TestH2HPACKBomb(t *testing.T) {
	p, addr := attackProxy(t)
	r := dialH2(t, addr)
	big := strings.Repeat("b", 4000)
	// Stream 1 puts the big field in the dynamic table (it fits the limit).
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block("/a", hpack.HeaderField{Name: "x-big", Value: big}), EndStream: true, EndHeaders: true})
	if s := r.response(1); s != "200" {
		t.Fatalf("seed request: %s", s)
	}
	// Stream 3 references it 500 times: ~2 MB decoded from ~1 KB.
	var extra []hpack.HeaderField
	for range 500 {
		extra = append(extra, hpack.HeaderField{Name: "x-big", Value: big})
	}
	frag := r.block("/b", extra...)
	if len(frag) > 16384 {
		t.Fatalf("bomb block is %d bytes; expected it to compress", len(frag))
	}
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: frag, EndStream: true, EndHeaders: true})
	if s := r.response(3); s != "431" {
		t.Fatalf("HPACK bomb: status %s, want 431", s)
	}
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: r.block("/c"), EndStream: true, EndHeaders: true})
	if s := r.response(5); s != "200" {
		t.Fatalf("after the bomb, same connection: %s", s)
	}
	stillServes(t, p.url("ingress"))
}

// TestH2PingFlood: a client that sends PINGs and SETTINGS without reading
// the acknowledgements is cut off with ENHANCE_YOUR_CALM once the queue
// of answers it provoked outgrows its bound, while other clients are
// served.
func TestH2PingFlood(t *testing.T) {
	p, addr := attackProxy(t)
	r := dialH2(t, addr)
	bw := bufio.NewWriterSize(r.c, 64<<10)
	fr := http2.NewFramer(bw, r.c)
	r.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	var ping [8]byte
	var err error
	sent := 0
	for ; sent < 500_000_000 && err == nil; sent++ {
		if sent%2 == 0 {
			err = fr.WritePing(false, ping)
		} else {
			err = fr.WriteSettings()
		}
		if err == nil && sent%4096 == 0 {
			err = bw.Flush()
		}
		if sent == 100_000 {
			stillServes(t, p.url("ingress"))
		}
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("sent %d control frames without reading; the proxy did not cut the connection off (%v)", sent, err)
	}
	t.Logf("flood cut off after %d frames: %v", sent, err)
	stillServes(t, p.url("ingress"))
}

// TestH2ZeroWindowStall: a client that opens a zero window never lets the
// response through; stream_idle_timeout resets the stream and frees the
// worker.
func TestH2ZeroWindowStall(t *testing.T) {
	up := testutil.StartUpstream(t)
	p := startProxy(t, httpBootstrap(up.Addr, routeCfg{hcmOpts: "          stream_idle_timeout: 0.5s"}, ""))
	r := dialH2(t, p.addr("ingress"))
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block("/size/100000"), EndStream: true, EndHeaders: true})
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no reset of the stalled stream: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
			break
		}
	}
	p.settle()
	stillServes(t, p.url("ingress"))
}

// TestH2TrailersAfterAnswer: the request's trailers are split across
// HEADERS and CONTINUATION, and the stream is answered and ended between
// the two; the rest of the block is decoded and dropped (a regression: the
// reader dereferenced the ended stream and crashed the process).
func TestH2TrailersAfterAnswer(t *testing.T) {
	p := startProxy(t, httpBootstrap(earlyAnswerUpstream(t), routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0s }`}, h2Upstream))
	r := dialH2(t, p.addr("ingress"))
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block("/up"), EndHeaders: true})
	r.hbuf.Reset()
	r.enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: strings.Repeat("t", 100)})
	blk := append([]byte(nil), r.hbuf.Bytes()...)
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:10], EndStream: true, EndHeaders: false})
	if s := r.response(1); s != "413" {
		t.Fatalf("status %s", s)
	}
	time.Sleep(50 * time.Millisecond) // the worker finishes the stream
	r.fr.WriteContinuation(1, true, blk[10:])
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: r.block("/after"), EndStream: true, EndHeaders: true})
	if s := r.response(3); s != "413" {
		t.Fatalf("next stream on the same connection: %s", s)
	}
}

// earlyAnswerUpstream is an HTTP/2 upstream that answers 413 without
// reading the request body.
func earlyAnswerUpstream(t *testing.T) string {
	return serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
	}, true)
}

// TestH2UpstreamAnswersEarly: an HTTP/2 upstream that answers before
// reading the request body (and resets the upload with NO_ERROR) ends the
// exchange at once; the proxy does not wait for window on the upload.
func TestH2UpstreamAnswersEarly(t *testing.T) {
	p := startProxy(t, httpBootstrap(earlyAnswerUpstream(t), routeCfg{routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0s }`}, h2Upstream))
	var taken atomic.Int64
	req, _ := http.NewRequest("POST", p.url("ingress")+"/up", &countingZeros{left: 64 << 20, taken: &taken})
	req.ContentLength = 64 << 20
	c := h2cClient()
	c.Timeout = 10 * time.Second
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	p.settle()
	t.Logf("answered after %v, %d KiB of the upload taken", time.Since(start), taken.Load()>>10)
}

// TestH2EmptyFrameFlood (CVE-2019-9518): a stream of empty DATA frames
// is cut off.
func TestH2EmptyFrameFlood(t *testing.T) {
	floodIsCalmed(t, "empty frames flood", 100000, func(r *h2Raw, i int) error {
		if i == 0 {
			return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block("/sink"), EndHeaders: true})
		}
		return r.fr.WriteData(1, false, nil)
	})
}

// TestH2ResetBodyNotPassedAsWhole: a client that sends its whole body and
// then resets the stream must not have a shortened body delivered
// upstream as complete (a regression: the dropped body read as a clean end).
func TestH2ResetBodyNotPassedAsWhole(t *testing.T) {
	var bad atomic.Int32
	addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err == nil && len(b) != 3 {
			bad.Add(1)
		}
	}, false)
	p := startProxy(t, httpBootstrap(addr, routeCfg{}, ""))
	r := dialH2(t, p.addr("ingress"))
	for id := uint32(1); id < 200; id += 2 {
		r.hbuf.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":authority", Value: "t"}, {Name: ":path", Value: "/sink"}} {
			r.enc.WriteField(f)
		}
		r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true})
		r.fr.WriteData(id, true, []byte("abc"))
		r.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	p.settle()
	time.Sleep(100 * time.Millisecond)
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d requests reached the upstream as complete with a shortened body", n)
	}
}

// TestH2WindowUpdateFlood: WINDOW_UPDATE frames that no data of ours
// calls for are bounded as Envoy bounds them (5 + 2 × (streams +
// 10 × DATA frames sent)): the flooder gets ENHANCE_YOUR_CALM.
func TestH2WindowUpdateFlood(t *testing.T) {
	floodIsCalmed(t, "WINDOW_UPDATE flood", 100000, func(r *h2Raw, _ int) error {
		return r.fr.WriteWindowUpdate(0, 1)
	})
}

// TestH2PriorityFlood (CVE-2019-9513): PRIORITY frames are bounded per
// opened stream (100 by default, max_inbound_priority_frames_per_stream).
func TestH2PriorityFlood(t *testing.T) {
	floodIsCalmed(t, "PRIORITY flood", 100000, func(r *h2Raw, i int) error {
		return r.fr.WritePriority(uint32(2*i+1), http2.PriorityParam{StreamDep: 0, Weight: 15})
	})
}

// TestH2FloodLimitsConfigurable: http2_protocol_options' flood bounds
// apply: with max_inbound_priority_frames_per_stream 2, a third PRIORITY
// frame before any stream is too many, while the default allows it.
func TestH2FloodLimitsConfigurable(t *testing.T) {
	up := testutil.StartUpstream(t)
	strict := startProxy(t, httpBootstrap(up.Addr, routeCfg{hcmOpts: `          http2_protocol_options: { max_inbound_priority_frames_per_stream: 2, max_outbound_control_frames: 10 }`}, ""))
	lenient := startProxy(t, httpBootstrap(up.Addr, routeCfg{}, ""))
	for _, tc := range []struct {
		p    *proxy
		goes bool
	}{{strict, true}, {lenient, false}} {
		r := dialH2(t, tc.p.addr("ingress"))
		for i := range 3 {
			r.fr.WritePriority(uint32(2*i+1), http2.PriorityParam{Weight: 15})
		}
		r.fr.WritePing(false, [8]byte{1})
		// The PING's answer comes after any GOAWAY the PRIORITY frames
		// caused.
		r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var goaway bool
		for {
			f, err := r.fr.ReadFrame()
			if err != nil {
				break
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok && ga.ErrCode == http2.ErrCodeEnhanceYourCalm {
				goaway = true
				break
			}
			if pf, ok := f.(*http2.PingFrame); ok && pf.IsAck() {
				break
			}
		}
		if goaway != tc.goes {
			t.Fatalf("3 PRIORITY frames with limit 2 (strict=%v): GOAWAY %v", tc.p == strict, goaway)
		}
	}
}

// TestH2FramesAfterOurResetIgnored: DATA a client had in flight when we
// ended its stream early (the upstream answered before the body was
// sent) is ignored, not answered with a reset per frame, so it never
// counts as a flood of provoked frames (here bounded at 10) and the
// connection goes on.
func TestH2FramesAfterOurResetIgnored(t *testing.T) {
	p := startProxy(t, httpBootstrap(earlyAnswerUpstream(t), routeCfg{
		routes: `              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 0s }`,
		hcmOpts: `          http2_protocol_options: { max_outbound_control_frames: 10 }`}, h2Upstream))
	r := dialH2(t, p.addr("ingress"))
	post := func(id uint32) {
		r.hbuf.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":authority", Value: "test"}, {Name: ":path", Value: "/up"}} {
			r.enc.WriteField(f)
		}
		r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true})
	}
	post(1)
	r.fr.WriteData(1, false, []byte("x"))
	if st := r.response(1); st != "413" {
		t.Fatalf("early answer: %s", st)
	}
	// The stream is over for us: the client's body keeps coming.
	for range 200 {
		if err := r.fr.WriteData(1, false, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
	}
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: r.block("/ok"), EndStream: true, EndHeaders: true})
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resets := 0
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection lost after the late DATA (%d resets seen): %v", resets, err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after DATA that crossed our reset (%d resets seen)", f.ErrCode, resets)
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				resets++
			}
		case *http2.HeadersFrame:
			if f.StreamID == 3 {
				if resets > 1 {
					t.Fatalf("%d resets for stream 1, want at most the one that ended it", resets)
				}
				return
			}
		}
	}
}
