package http2

// Stream resets and the memory of closed streams: errors that end a
// stream or the connection, what the peer may still send on a stream
// that ended, and the flood guards that go with them.

import (
	"time"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
)

// closedStream remembers how a stream closed: frames the peer sends
// after our RST_STREAM may have crossed it and get a stream error; after a
// normal close they are a connection error (RFC 9113 §5.1).
type closedStream struct {
	id    uint32
	reset bool
	ours  bool // we sent the RST_STREAM
}

// connError sends GOAWAY with code, fails every stream and closes the
// connection after a moment for the peer to read the GOAWAY. mu held.
func (sc *serverConn) connError(code http2.ErrCode, reason string) {
	if sc.dead {
		return
	}
	sc.dead = true
	sc.fr.WriteGoAway(sc.maxSeen, code, []byte(reason))
	sc.failStreams(protocol.ErrDownstreamReset)
	c := sc.c
	// The close is armed first: a peer that does not read would hold the
	// flush (and the half-close behind it) forever.
	time.AfterFunc(goAwayLinger, func() { c.Close() })
	go func() {
		sc.mu.Lock()
		sc.drainQueueLocked()
		err := sc.werr
		sc.mu.Unlock()
		if err == nil {
			c.CloseWrite()
		}
	}()
}

func (sc *serverConn) failStreams(err error) {
	for _, st := range sc.streams {
		st.in.fail(err)
		st.reset = true
		st.clientGone()
	}
	sc.wcond.Broadcast()
}

// resetStream sends RST_STREAM and forgets the stream. mu held. Workers
// call it for their own streams; the reader calls refuse.
func (sc *serverConn) resetStream(id uint32, code http2.ErrCode) {
	sc.fr.WriteRSTStream(id, code)
	if st := sc.streams[id]; st != nil {
		st.reset, st.sentReset = true, true
		st.in.fail(protocol.ErrDownstreamReset)
		sc.wcond.Broadcast()
		sc.forgetAs(st, true)
	} else if found, _ := sc.closedBy(id); !found {
		sc.remember(id, true, true)
	}
}

// refuse resets a stream for something the peer sent: such resets count
// toward the provoked-frames bound (a peer that provokes them without
// reading is flooding). Reader only, mu held.
func (sc *serverConn) refuse(id uint32, code http2.ErrCode) {
	sc.controlFrame()
	sc.resetStream(id, code)
}

// forget removes a stream from the table; its connection-window credit
// for unread data goes back. mu held.
func (sc *serverConn) forget(st *serverStream) { sc.forgetAs(st, st.reset) }

func (sc *serverConn) forgetAs(st *serverStream, reset bool) {
	if sc.streams[st.id] != st {
		return
	}
	delete(sc.streams, st.id)
	sc.remember(st.id, reset, st.sentReset)
	if sc.inBlock && sc.blk.id == st.id && sc.blk.kind == blkTrailers {
		// Its trailers are still arriving in CONTINUATION frames: decode
		// the rest only to keep HPACK in step.
		sc.blk.kind, sc.blk.h = blkDiscard, nil
	}
	sc.dropInbox(&st.in)
	sc.closeIfDoneLocked()
}

// emptyFlood counts a frame that carries nothing and ends nothing (DATA,
// HEADERS or CONTINUATION, as Envoy counts them): too many in a row is a
// flood (CVE-2019-9518). Any other frame of those kinds resets the count.
func (sc *serverConn) emptyFlood(empty bool) bool {
	if !empty {
		sc.emptyFrames = 0
		return false
	}
	if sc.emptyFrames++; uint64(sc.emptyFrames) > sc.maxEmpty {
		sc.connError(http2.ErrCodeEnhanceYourCalm, "too many empty frames")
		return true
	}
	return false
}

func (sc *serverConn) remember(id uint32, reset, ours bool) {
	sc.recent[sc.recentPos] = closedStream{id, reset, ours}
	sc.recentPos = (sc.recentPos + 1) % recentClosed
}

// resetByUs reports whether we reset id recently: frames that crossed our
// RST_STREAM are ignored (RFC 9113 §5.1), never answered.
func (sc *serverConn) resetByUs(id uint32) bool {
	for _, r := range sc.recent {
		if r.id == id {
			return r.ours
		}
	}
	return false
}

// closedBy reports whether id closed recently and whether by a reset.
func (sc *serverConn) closedBy(id uint32) (found, reset bool) {
	for _, r := range sc.recent {
		if r.id == id {
			return true, r.reset
		}
	}
	return false, false
}

// closedOrIdle answers a frame for a stream not in the table: idle
// streams are a connection error; closed ones a STREAM_CLOSED error.
func (sc *serverConn) closedOrIdle(id uint32, what string) {
	if id > sc.maxSeen {
		sc.connError(http2.ErrCodeProtocol, what+" on an idle stream")
		return
	}
	if sc.resetByUs(id) {
		return
	}
	sc.refuse(id, http2.ErrCodeStreamClosed)
}

func (sc *serverConn) onReset(f *http2.RSTStreamFrame) {
	id := f.StreamID
	st := sc.streams[id]
	if st == nil {
		if id > sc.maxSeen {
			sc.connError(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
		}
		return
	}
	now := time.Now()
	if now.Sub(sc.resetsSince) > time.Second {
		sc.resetsSince, sc.resets = now, 0
	}
	sc.resets++
	st.reset = true
	st.in.fail(protocol.ErrDownstreamReset)
	st.clientGone()
	sc.wcond.Broadcast()
	sc.forget(st)
	if sc.resets > sc.maxResets {
		sc.connError(http2.ErrCodeEnhanceYourCalm, "too many stream resets (rapid reset)")
	}
}
