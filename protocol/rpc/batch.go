package rpc

import (
	"errors"
	"runtime"
	"sync"
)

// batcher joins the frames that many calls write to one connection at the
// same time into fewer system calls. Whoever finds the connection free
// writes its own frame and then, before letting go, everything that other
// callers queued meanwhile; a caller that finds a write in progress copies
// a small frame into the queue and returns at once. Large frames, and any
// frame when the queue is already big (a slow reader), wait their turn and
// are written in place, so memory stays bounded and a slow reader still
// pushes back on its writers.
//
// A queued frame's write error is not seen by its caller; it is seen by the
// writer in progress, which reports it to fail (the connection is then
// unusable for everyone).
type batcher struct {
	mu      sync.Mutex
	idle    sync.Cond // signalled when busy clears
	busy    bool
	err     error
	queue   []byte
	spare   []byte
	write   func([][]byte) error
	fail    func(error)
	one     [1][]byte
	one2    [1][]byte // sendNoWait's (one reader calls it)
	vec     [8][]byte
	waiters int
	then    func() // run once the write in progress ends (closeAfter)
}

const (
	batchFrameMax = 16 << 10  // frames up to this size may be queued
	batchQueueMax = 256 << 10 // queued bytes beyond which writers wait
)

func (b *batcher) init(write func([][]byte) error, fail func(error)) {
	b.idle.L = &b.mu
	b.write, b.fail = write, fail
}

// send writes the frame made of vec, or queues it behind the write in
// progress. The caller may reuse vec's buffers when send returns.
func (b *batcher) send(vec [][]byte) error { return b.sendOpt(vec, false) }

// sendOpt is send; noWait queues the frame behind a write in progress
// whatever its size and the queue's.
func (b *batcher) sendOpt(vec [][]byte, noWait bool) error {
	n := 0
	for _, p := range vec {
		n += len(p)
	}
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return err
	}
	if b.busy && (noWait || n <= batchFrameMax && len(b.queue)+n <= batchQueueMax) {
		for _, p := range vec {
			b.queue = append(b.queue, p...)
		}
		b.mu.Unlock()
		return nil
	}
	for b.busy {
		b.waiters++
		b.idle.Wait()
		b.waiters--
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return err
	}
	b.busy = true
	b.mu.Unlock()

	// Let the calls already runnable reach their send first: under load
	// they queue behind this write and leave in the same system call.
	runtime.Gosched()
	b.mu.Lock()
	q := b.queue
	b.queue, b.spare = b.spare[:0], nil
	b.mu.Unlock()
	v := append(b.vec[:0], vec...)
	if len(q) > 0 {
		v = append(v, q)
	}
	err := b.write(v)
	clear(v)
	b.recycle(q)
	// Write what was queued meanwhile until the queue is empty. The check
	// that finds it empty and the end of busy are one critical section:
	// a frame queued between them would never be written.
	b.mu.Lock()
	for err == nil && len(b.queue) > 0 {
		q = b.queue
		b.queue, b.spare = b.spare[:0], nil
		b.mu.Unlock()
		b.one[0] = q
		err = b.write(b.one[:])
		b.one[0] = nil
		b.mu.Lock()
		b.keepSpareLocked(q)
	}
	b.busy = false
	if err != nil && b.err == nil {
		b.err = err
		b.queue = b.queue[:0]
	}
	if b.waiters > 0 {
		b.idle.Broadcast()
	}
	then := b.then
	b.then = nil
	if then != nil && b.err == nil {
		b.err = errBatcherClosed // nothing more goes out
	}
	b.mu.Unlock()
	if err != nil && b.fail != nil {
		b.fail(err)
	}
	if then != nil {
		then()
	}
	return err
}

// recycle keeps a written queue buffer for the next round (writer only).
func (b *batcher) recycle(q []byte) {
	b.mu.Lock()
	b.keepSpareLocked(q)
	b.mu.Unlock()
}

// keepSpareLocked keeps q as the next queue unless it grew too large
// (b.mu held).
func (b *batcher) keepSpareLocked(q []byte) {
	if q != nil && cap(q) <= 2*batchQueueMax {
		b.spare = q[:0]
	}
}

// closeAfter runs f once what is queued has been written: now when no
// write is in progress, else when the writer in progress is done.
// From then on nothing more is written: a later send fails.
func (b *batcher) closeAfter(f func()) {
	b.mu.Lock()
	if b.busy {
		b.then = f
		b.mu.Unlock()
		return
	}
	if b.err == nil {
		b.err = errBatcherClosed
	}
	b.mu.Unlock()
	f()
}

// errBatcherClosed fails a send after closeAfter.
var errBatcherClosed = errors.New("rpc: connection closing")

// sendNoWait is send for a reader that must never wait on the writer (a
// heartbeat's answer): while a write is in progress the frame is queued
// whatever the queue's size. One goroutine at a time may call it.
func (b *batcher) sendNoWait(p []byte) error {
	b.one2[0] = p
	err := b.sendOpt(b.one2[:], true)
	b.one2[0] = nil
	return err
}
