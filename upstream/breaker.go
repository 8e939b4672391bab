package upstream

import (
	"sync/atomic"
)

// Breaker holds one cluster's circuit-breaker thresholds and the live
// counts they are checked against (Envoy's DEFAULT priority).
type Breaker struct {
	MaxConnections     int64
	MaxPendingRequests int64
	MaxRequests        int64
	MaxRetries         int64

	Connections atomic.Int64
	Pending     atomic.Int64
	Requests    atomic.Int64
	Retries     atomic.Int64
}

// Defaults are Envoy's.
const (
	DefaultMaxConnections     = 1024
	DefaultMaxPendingRequests = 1024
	DefaultMaxRequests        = 1024
	DefaultMaxRetries         = 3
)

// tryAcquire increments c if it stays within max.
func tryAcquire(c *atomic.Int64, max int64) bool {
	for {
		n := c.Load()
		if n >= max {
			return false
		}
		if c.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// AcquireRequest counts one more active request, or reports overflow.
func (b *Breaker) AcquireRequest() bool { return tryAcquire(&b.Requests, b.MaxRequests) }

// ReleaseRequest undoes AcquireRequest.
func (b *Breaker) ReleaseRequest() { b.Requests.Add(-1) }

// AcquireRetry counts one more active retry, or reports overflow.
func (b *Breaker) AcquireRetry() bool { return tryAcquire(&b.Retries, b.MaxRetries) }

// ReleaseRetry undoes AcquireRetry.
func (b *Breaker) ReleaseRetry() { b.Retries.Add(-1) }
