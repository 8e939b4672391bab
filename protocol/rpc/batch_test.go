package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowSink records what the batcher writes, one write at a time, slowly
// enough that other senders find it busy.
type slowSink struct {
	mu     sync.Mutex
	inside atomic.Int32
	buf    bytes.Buffer
	writes int
	fail   error
}

func (w *slowSink) write(vec [][]byte) error {
	if w.inside.Add(1) != 1 {
		panic("two writers at once")
	}
	defer w.inside.Add(-1)
	time.Sleep(50 * time.Microsecond)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if w.fail != nil {
		return w.fail
	}
	for _, p := range vec {
		w.buf.Write(p)
	}
	return nil
}

// frame is a length-prefixed record: sender, sequence, padding.
func frame(sender, seq uint32, size int) [][]byte {
	h := make([]byte, 12)
	binary.BigEndian.PutUint32(h, uint32(size))
	binary.BigEndian.PutUint32(h[4:], sender)
	binary.BigEndian.PutUint32(h[8:], seq)
	return [][]byte{h, bytes.Repeat([]byte{byte(sender)}, size)}
}

func TestBatcherJoinsConcurrentFrames(t *testing.T) {
	var sink slowSink
	var b batcher
	b.init(sink.write, nil)
	const senders, each = 16, 100
	var wg sync.WaitGroup
	for s := range uint32(senders) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range uint32(each) {
				size := 100
				if i%50 == 7 {
					size = batchFrameMax + 1 // written in place, never queued
				}
				v := frame(s, i, size)
				if err := b.send(v); err != nil {
					t.Error(err)
					return
				}
				clear(v[1]) // the caller reuses its buffer at once
			}
		}()
	}
	wg.Wait()
	// Every frame arrived whole, each sender's in order.
	next := make([]uint32, senders)
	data := sink.buf.Bytes()
	n := 0
	for len(data) > 0 {
		size := int(binary.BigEndian.Uint32(data))
		s, seq := binary.BigEndian.Uint32(data[4:]), binary.BigEndian.Uint32(data[8:])
		body := data[12 : 12+size]
		if seq != next[s] || bytes.Count(body, []byte{byte(s)}) != size {
			t.Fatalf("frame %d: sender %d seq %d (want %d), body intact %v", n, s, seq, next[s], bytes.Count(body, []byte{byte(s)}) == size)
		}
		next[s]++
		data = data[12+size:]
		n++
	}
	if n != senders*each {
		t.Fatalf("%d frames, want %d", n, senders*each)
	}
	if sink.writes >= n {
		t.Fatalf("%d writes for %d frames: nothing was joined", sink.writes, n)
	}
	t.Logf("%d frames in %d writes", n, sink.writes)
}

// TestBatcherLosesNothing: senders racing writers that are finishing. A
// queued frame is written by the writer in progress before its send
// returns, so once every send has returned every frame is out: one
// queued just as a writer found the queue empty must not be lost (a
// lingering close then ran before the frame, and a Dubbo client saw EOF
// for its answer).
func TestBatcherLosesNothing(t *testing.T) {
	const senders, each = 8, 20000
	var got [senders]atomic.Int64
	var b batcher
	b.init(func(vec [][]byte) error {
		for _, p := range vec {
			for _, c := range p {
				got[c].Add(1)
			}
		}
		return nil
	}, nil)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frame := [][]byte{{byte(s)}}
			for range each {
				b.send(frame)
			}
		}()
	}
	wg.Wait()
	for s := range senders {
		if n := got[s].Load(); n != each {
			t.Errorf("sender %d: %d of %d frames written", s, n, each)
		}
	}
}

func TestBatcherErrorSticksAndCloseWaits(t *testing.T) {
	sink := slowSink{fail: errors.New("broken pipe")}
	var failed atomic.Int32
	var b batcher
	b.init(sink.write, func(error) { failed.Add(1) })
	if err := b.send(frame(1, 0, 10)); err == nil {
		t.Fatal("a failed write reported no error")
	}
	if err := b.send(frame(1, 1, 10)); err == nil || sink.writes != 1 {
		t.Fatalf("after a failure: err %v, %d writes; want the error and no write", err, sink.writes)
	}
	if failed.Load() != 1 {
		t.Fatalf("fail called %d times", failed.Load())
	}

	// closeAfter runs after the write in progress and what it queued.
	gate, entered := make(chan struct{}), make(chan struct{})
	var order []string
	var c batcher
	c.init(func(vec [][]byte) error {
		if len(order) == 0 {
			close(entered)
			<-gate
		}
		order = append(order, "write")
		return nil
	}, nil)
	wrote := make(chan struct{})
	go func() {
		c.send(frame(2, 0, 10))
		close(wrote)
	}()
	<-entered
	if err := c.send(frame(2, 1, 10)); err != nil { // queued behind the first
		t.Fatal(err)
	}
	c.closeAfter(func() { order = append(order, "close") })
	close(gate)
	<-wrote
	if got := fmt.Sprint(order); got != "[write write close]" {
		t.Fatalf("order %s, want the two writes then the close", got)
	}
	c.closeAfter(func() { order = append(order, "now") })
	if order[len(order)-1] != "now" {
		t.Fatal("closeAfter on an idle batcher did not run at once")
	}
}

func BenchmarkBatcherSend(b *testing.B) {
	var b2 batcher
	b2.init(func([][]byte) error { return nil }, nil)
	v := frame(1, 1, 100)
	b.ReportAllocs()
	for b.Loop() {
		b2.send(v)
	}
}
