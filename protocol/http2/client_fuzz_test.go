package http2

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// seedResponse is a valid server side of one exchange: SETTINGS, the
// response headers of stream 1 split over CONTINUATION, data, trailers.
func seedResponse() []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 10})
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "3"})
	b := hb.Bytes()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:1]})
	fr.WriteContinuation(1, true, b[1:])
	fr.WriteData(1, false, []byte("abc"))
	hb.Reset()
	enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	fr.WritePing(false, [8]byte{1})
	fr.WriteWindowUpdate(0, 100)
	fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	return buf.Bytes()
}

// FuzzClientConn feeds arbitrary bytes as an upstream's side of an HTTP/2
// connection to the client codec while a stream asks and reads: nothing
// may panic or hang, whatever the upstream sends (issue 11, item 15).
func FuzzClientConn(f *testing.F) {
	f.Add(seedResponse())
	f.Add([]byte{})
	f.Add(append(seedResponse()[:9], 0xff, 0xff))
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		go func() {
			io.CopyN(io.Discard, server, int64(len(http2.ClientPreface))) // our preface
			go io.Copy(io.Discard, server)
			server.Write(in) // net.Pipe: returns once the client has read it all
			server.Close()
		}()
		mc := newMux(client, protocol.MuxOptions{})
		defer mc.Close()
		cs, err := mc.NewStream()
		if err != nil {
			return
		}
		defer cs.Close()
		cs.SetDeadline(time.Now().Add(time.Second))
		var h protocol.Headers
		h.Set(protocol.Method, "GET")
		h.Set(protocol.Scheme, "http")
		h.Set(protocol.Path, "/")
		h.Set(protocol.Authority, "x")
		if cs.WriteHeaders(&h, true) != nil {
			return
		}
		var resp protocol.Headers
		if cs.ReadHeaders(&resp) != nil || cs.EndStream() {
			return
		}
		for range 100 {
			if _, err := cs.ReadData(); err != nil {
				return
			}
		}
	})
}
