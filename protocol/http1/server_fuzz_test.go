package http1

import (
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"github.com/straitproxy/strait/protocol"
)

// echoWorker answers each request after reading its body, as a worker
// would.
type echoWorker struct{ wg sync.WaitGroup }

func (w *echoWorker) OnStream(s protocol.ServerStream) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		n := 0
		for {
			d, err := s.ReadData()
			n += len(d)
			if err != nil {
				break
			}
		}
		var h protocol.Headers
		h.Set(protocol.Status, "200")
		if s.WriteHeaders(&h, false) == nil {
			s.WriteData([]byte("ok"), true)
		}
		s.Finish(false)
	}()
}

// FuzzServerConn drives the whole server codec (parser, body pipe,
// pipelining, pause and resume, early answers) with arbitrary bytes in
// arbitrary splits: it must never panic, deadlock or leave a worker
// behind.
func FuzzServerConn(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\nHost: a\r\n\r\n"), uint8(7))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), uint8(1))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), uint8(3))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"), uint8(0))
	f.Add([]byte("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		fc := &testutil.FakeConn{}
		w := &echoWorker{}
		sc := newServer(fc, protocol.ServerOptions{BodyBufferLimit: 16}, w).(*serverConn)
		step := int(split)%13 + 1
		var buf []byte
		off := 0
		for {
			if off < len(data) {
				end := min(off+step, len(data))
				buf = append(buf, data[off:end]...)
				off = end
			}
			n := sc.Decode(buf)
			if n < 0 || n > len(buf) {
				t.Fatalf("consumed %d of %d", n, len(buf))
			}
			buf = buf[n:]
			if _, closed := fc.State(); closed || (off == len(data) && len(buf) == 0) {
				break
			}
			if off < len(data) || n > 0 {
				continue
			}
			// Everything is fed and bytes are left. Not paused: an
			// incomplete message that needs bytes that never come. Paused
			// (a pipelined request, a full pipe): the worker must make
			// progress and resume reading.
			if paused, _ := fc.State(); !paused {
				break
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				paused, closed := fc.State()
				if !paused || closed {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("stuck paused with %d bytes left", len(buf))
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
		sc.OnClose(nil)
		done := make(chan struct{})
		go func() { w.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("a worker never finished after the connection closed")
		}
	})
}

// BenchmarkHeadByteByByte: a 16 KiB head that arrives one byte per read
// costs work linear in its size, not quadratic.
func BenchmarkHeadByteByByte(b *testing.B) {
	head := []byte("GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + string(make([]byte, 16<<10)) + "\r\n\r\n")
	for i := range head[32 : len(head)-4] {
		head[32+i] = 'a'
	}
	b.ReportAllocs()
	for b.Loop() {
		fc := &testutil.FakeConn{}
		w := &echoWorker{}
		sc := newServer(fc, protocol.ServerOptions{}, w).(*serverConn)
		for i := 1; i <= len(head); i++ {
			if sc.Decode(head[:i]) > 0 {
				break
			}
		}
		sc.OnClose(nil)
		w.wg.Wait()
	}
}
