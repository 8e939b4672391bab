// Package spanbatch batches finished spans off the request path for a
// tracer's reporter: a bounded queue (a full one drops, counted), a
// flush when enough spans wait or at each flush interval, both read from
// the runtime under the tracer's keys, and one goroutine per collector.
package spanbatch

import (
	"sync"
	"time"
)

// Counter is a stats counter.
type Counter interface {
	Inc()
	Add(n uint64)
}

// MaxPending is how many spans may wait; more are dropped.
const MaxPending = 1000

// Batcher queues spans of type T and hands batches to Send.
type Batcher[T any] struct {
	// Lookup reads a runtime number (false: not set); MinFlushKey and
	// FlushKey are the keys of the minimum batch (default 5) and the
	// flush interval in milliseconds (default 5000), as Envoy's tracers
	// name them ("tracing.zipkin.min_flush_spans").
	Lookup                func(key string) (uint64, bool)
	MinFlushKey, FlushKey string
	// Send delivers a batch; it reports how many spans went (0 on a
	// failure, which it counts itself).
	Send func(batch []T) int
	// SpansSent and TimerFlushed are counted here; Dropped counts spans
	// a full queue refused.
	SpansSent, TimerFlushed, Dropped Counter

	mu      sync.Mutex
	pending []T
	kick    chan struct{}
	once    sync.Once
}

func (b *Batcher[T]) number(key string, def uint64) uint64 {
	if b.Lookup != nil {
		if v, ok := b.Lookup(key); ok && v >= 1 {
			return v
		}
	}
	return def
}

// Start runs the flushing goroutine (once); it lives as long as the
// process, holding nothing while idle.
func (b *Batcher[T]) Start() {
	b.once.Do(func() {
		b.kick = make(chan struct{}, 1)
		go b.run()
	})
}

// Add queues a span.
func (b *Batcher[T]) Add(s T) {
	b.mu.Lock()
	if len(b.pending) >= MaxPending {
		b.mu.Unlock()
		b.Dropped.Inc()
		return
	}
	b.pending = append(b.pending, s)
	n := len(b.pending)
	b.mu.Unlock()
	if uint64(n) >= b.number(b.MinFlushKey, 5) {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

func (b *Batcher[T]) run() {
	for {
		t := time.NewTimer(time.Duration(b.number(b.FlushKey, 5000)) * time.Millisecond)
		select {
		case <-b.kick:
			t.Stop()
		case <-t.C:
			b.TimerFlushed.Inc()
		}
		b.mu.Lock()
		batch := b.pending
		b.pending = nil
		b.mu.Unlock()
		if len(batch) > 0 {
			b.SpansSent.Add(uint64(b.Send(batch)))
		}
	}
}

// Shared holds one value per key, made on first use: the reporters a
// tracer kind shares among every tracer that reports to the same place
// (each listener update builds its connection managers' tracers again),
// one goroutine and one connection pool per collector, for the process.
type Shared[R any] struct {
	mu sync.Mutex
	m  map[string]R
}

// Get returns key's value, made by make when there is none yet; reused
// says it was there already.
func (s *Shared[R]) Get(key string, make func() R) (r R, reused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.m[key]; ok {
		return r, true
	}
	if s.m == nil {
		s.m = map[string]R{}
	}
	r = make()
	s.m[key] = r
	return r, false
}
