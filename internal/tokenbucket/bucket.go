// Package tokenbucket is Envoy's token bucket (envoy.type.v3.TokenBucket)
// as the local rate limit filters use it: max_tokens, tokens_per_fill
// every fill_interval, starting full. Buckets may be shared by key.
package tokenbucket

import (
	"errors"
	"fmt"
	"sync"
	"time"
	"weak"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Spec is a bucket's shape.
type Spec struct {
	Max, PerFill int64
	Interval     time.Duration
}

// FieldError is FromProto's error: the field (under the filter's
// config) and what is wrong with it. (This package sits below config:
// callers turn it into a config.At path error.)
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// FromProto validates tb, the filter's token_bucket, as Envoy's local
// rate limits do (fill_interval at least 50 ms).
func FromProto(tb *typev3.TokenBucket) (Spec, error) {
	if tb == nil {
		return Spec{}, &FieldError{"token_bucket", errors.New("required")}
	}
	s := Spec{Max: int64(tb.GetMaxTokens()), PerFill: 1, Interval: tb.GetFillInterval().AsDuration()}
	if v := tb.GetTokensPerFill(); v != nil {
		s.PerFill = int64(v.GetValue())
	}
	if s.Max <= 0 {
		return Spec{}, &FieldError{"token_bucket.max_tokens", errors.New("must be above 0")}
	}
	if s.Interval < 50*time.Millisecond {
		return Spec{}, &FieldError{"token_bucket.fill_interval", errors.New("at least 50ms, as Envoy")}
	}
	return s, nil
}

// Bucket is a token bucket, safe for concurrent use.
type Bucket struct {
	spec   Spec
	mu     sync.Mutex
	tokens int64
	last   time.Time // the last fill
}

// New makes a full bucket.
func New(s Spec) *Bucket { return &Bucket{spec: s, tokens: s.Max, last: time.Now()} }

// Spec returns the bucket's shape.
func (b *Bucket) Spec() Spec { return b.spec }

// Take takes a token; it returns whether one was there, the tokens left
// and the time to the next fill.
func (b *Bucket) Take() (ok bool, left int64, reset time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &b.spec
	now := time.Now()
	if n := int64(now.Sub(b.last) / s.Interval); n > 0 {
		b.tokens = min(s.Max, b.tokens+n*s.PerFill)
		b.last = b.last.Add(time.Duration(n) * s.Interval)
	}
	reset = s.Interval - now.Sub(b.last)
	if b.tokens == 0 {
		return false, 0, reset
	}
	b.tokens--
	return true, b.tokens, reset
}

var shared = struct {
	mu sync.Mutex
	m  map[string]weak.Pointer[Bucket]
}{m: map[string]weak.Pointer[Bucket]{}}

// Shared returns the bucket shared by every user of the same key and
// shape (share_key), making it when none is alive: a bucket lives while
// a filter holds it.
func Shared(key string, s Spec) *Bucket {
	k := fmt.Sprintf("%s\x00%d/%d/%d", key, s.Max, s.PerFill, s.Interval)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if b := shared.m[k].Value(); b != nil {
		return b
	}
	for k, w := range shared.m {
		if w.Value() == nil {
			delete(shared.m, k)
		}
	}
	b := New(s)
	shared.m[k] = weak.Make(b)
	return b
}
