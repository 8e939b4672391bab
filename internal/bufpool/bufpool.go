// Package bufpool is the one buffer pool of the process. Buffers come in a
// few fixed size classes and are pooled by pointer, so that Get and Put do
// not allocate. It imports nothing from this module.
package bufpool

import (
	"sync"
	"sync/atomic"
)

// Size classes. A request larger than the largest class is served by a plain
// allocation and is not pooled on Put.
const (
	Small  = 4 << 10
	Medium = 16 << 10
	Large  = 64 << 10
)

var classes = [...]int{Small, Medium, Large}

var pools [len(classes)]sync.Pool

// outstanding counts class-size buffers handed out and not yet returned.
var outstanding atomic.Int64

// Outstanding reports the pooled buffers currently held by callers (for
// tests that prove a component returns what it takes).
func Outstanding() int64 { return outstanding.Load() }

func init() {
	for i := range pools {
		size := classes[i]
		pools[i].New = func() any {
			b := make([]byte, size)
			return &b
		}
	}
}

// Get returns a buffer of length size or more (its length is the class
// size). The caller owns it until it hands it to Put.
func Get(size int) *[]byte {
	for i, c := range classes {
		if size <= c {
			outstanding.Add(1)
			return pools[i].Get().(*[]byte)
		}
	}
	b := make([]byte, size)
	return &b
}

// Put returns a buffer obtained from Get. The caller must not touch it
// afterwards; a buffer whose capacity is not a class size is dropped.
func Put(b *[]byte) {
	if b == nil {
		return
	}
	c := cap(*b)
	for i, size := range classes {
		if c == size {
			outstanding.Add(-1)
			*b = (*b)[:size]
			pools[i].Put(b)
			return
		}
	}
}
