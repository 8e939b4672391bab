package http2

// The request headers timeout of a downstream connection (slowloris):
// a request head that has begun must be whole within it.

import (
	"time"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
)

// headPending reports whether a request head is being received: the
// preface, an open header block, or a HEADERS or CONTINUATION frame (or a
// frame header) not whole yet; rest is what Decode left unconsumed.
func (sc *serverConn) headPending(rest []byte) bool {
	switch {
	case sc.dead:
		return false
	case !sc.prefaceDone || sc.inBlock:
		return true
	case len(rest) == 0:
		return false
	case len(rest) < frameHeaderLen:
		return true
	}
	t := http2.FrameType(rest[3])
	return t == http2.FrameHeaders || t == http2.FrameContinuation
}

// armHeadTimerLocked runs the request headers timeout while a head is
// pending and stops it when none is. mu held.
func (sc *serverConn) armHeadTimerLocked(pending bool) {
	d := sc.opts.RequestHeadersTimeout
	switch {
	case d <= 0 || pending == sc.headArmed || sc.headTimedOut:
	case pending:
		sc.headArmed = true
		if sc.headTimer == nil {
			sc.headTimer = time.AfterFunc(d, sc.headTimeout)
		} else {
			sc.headTimer.Reset(d)
		}
	default:
		sc.headArmed = false
		sc.headTimer.Stop()
	}
}

// headTimeout ends a connection whose request head did not arrive in
// time: GOAWAY, then close (slowloris).
// It runs on a timer, not the reader: it leaves the reader's own state
// (dead) alone, and the close ends the reader.
func (sc *serverConn) headTimeout() {
	sc.mu.Lock()
	fire := sc.headArmed && !sc.closed
	sc.headArmed = false
	sc.headTimedOut = sc.headTimedOut || fire
	if fire {
		sc.fr.WriteGoAway(sc.maxSeen, http2.ErrCodeNo, []byte("request headers timeout"))
		sc.failStreams(protocol.ErrDownstreamReset)
		sc.flushAsyncLocked()
	}
	sc.mu.Unlock()
	if !fire {
		return
	}
	if c, ok := sc.cb.(protocol.HeadersTimeoutCounter); ok {
		c.OnHeadersTimeout()
	}
	time.AfterFunc(goAwayLinger, func() { sc.c.Close() })
}
