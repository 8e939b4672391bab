package http2

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// answerer answers every stream as a worker would: reads the body, writes
// headers, a little data and trailers, finishes.
type answerer struct{ wg sync.WaitGroup }

func (a *answerer) OnStream(s protocol.ServerStream) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			if _, err := s.ReadData(); err != nil {
				break
			}
		}
		var h protocol.Headers
		h.Set(protocol.Status, "200")
		if s.WriteHeaders(&h, false) == nil && s.WriteData([]byte("ok"), false) == nil {
			var t protocol.Headers
			t.Set("grpc-status", "0")
			s.WriteTrailers(&t)
		}
		s.Finish(false)
	}()
}

// seedFrames is a valid exchange: SETTINGS, a request with a body and
// trailers split over CONTINUATION, a PING, a WINDOW_UPDATE, a reset.
func seedFrames() []byte {
	var buf bytes.Buffer
	buf.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/x"}, {Name: ":authority", Value: "a"}, {Name: "content-length", Value: "3"}} {
		enc.WriteField(f)
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, false, []byte("abc"))
	hb.Reset()
	enc.WriteField(hpack.HeaderField{Name: "x-t", Value: "v"})
	b := hb.Bytes()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:1], EndStream: true})
	fr.WriteContinuation(1, true, b[1:])
	fr.WritePing(false, [8]byte{1})
	fr.WriteWindowUpdate(0, 1000)
	fr.WriteRSTStream(3, http2.ErrCodeCancel)
	return buf.Bytes()
}

// FuzzServerConn feeds arbitrary bytes after the preface to the server
// codec, in chunks, with a worker answering every stream: it must never
// panic or hang.
func FuzzServerConn(f *testing.F) {
	f.Add(seedFrames(), uint8(7))
	f.Add([]byte(http2.ClientPreface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		c := &testutil.FakeConn{}
		a := &answerer{}
		sc := newServer(c, protocol.ServerOptions{MaxHeaderBytes: 4096, MaxHeaders: 50, StreamIdleTimeout: 50 * time.Millisecond}, a)
		if !bytes.HasPrefix(data, []byte(http2.ClientPreface)) {
			data = append([]byte(http2.ClientPreface), data...)
		}
		step := int(chunk%64) + 1
		var pending []byte
		for off := 0; off < len(data); off += step {
			pending = append(pending, data[off:min(off+step, len(data))]...)
			n := sc.Decode(pending)
			pending = pending[n:]
		}
		sc.OnClose(io.EOF)
		done := make(chan struct{})
		go func() { a.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("a stream's worker never finished after the connection closed")
		}
	})
}
