package http2

import (
	"bytes"
	"errors"
	"time"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Server defaults; the connection manager's http2_protocol_options
// override them.
const (
	DefaultMaxConcurrentStreams = 100
	DefaultStreamWindow         = 1 << 20
	DefaultConnWindow           = 4 << 20
	// DefaultMaxResetsPerSecond caps the streams a client may reset per
	// second before it is told ENHANCE_YOUR_CALM (CVE-2023-44487).
	DefaultMaxResetsPerSecond = 200
	// maxBlockFrames bounds the CONTINUATION frames of one header block
	// (CVE-2024-27316); the block's bytes are bounded by the header list
	// limit.
	maxBlockFrames = 128
	// goAwayLinger is how long a connection stays half-open after a
	// GOAWAY for a connection error, so the peer reads it before the close.
	goAwayLinger = time.Second
	recentClosed = 64
	// DefaultMaxEmptyFrames bounds consecutive DATA frames with no payload
	// and no END_STREAM (Envoy's
	// max_consecutive_inbound_frames_with_empty_payload defaults to 1; we
	// allow a little slack).
	DefaultMaxEmptyFrames = 16
	// DefaultMaxControlFrames bounds the PING and SETTINGS acknowledgements
	// queued for a peer that does not read (Envoy's
	// max_outbound_control_frames).
	DefaultMaxControlFrames = 1000
	// DefaultMaxPriorityPerStream and DefaultMaxWindowUpdatesPerData are
	// Envoy's max_inbound_priority_frames_per_stream and
	// max_inbound_window_update_frames_per_data_frame_sent.
	DefaultMaxPriorityPerStream    = 100
	DefaultMaxWindowUpdatesPerData = 10
)

var clientPreface = []byte(http2.ClientPreface)

// A drained connection whose last frames are still going out is closed
// when a drainCloseWait passes without a socket write completing (the
// client stopped reading), and in any case after drainCloseChecks of them.
var (
	drainCloseWait   = 5 * time.Second
	drainCloseChecks = 12
)

// serverConn is one downstream HTTP/2 connection. The connection's reader
// runs Decode; each request's worker runs its serverStream's methods.
type serverConn struct {
	core
	c    protocol.Conn
	opts protocol.ServerOptions
	cb   protocol.ServerCallbacks

	maxStreams uint32
	maxResets  int

	// Reader-only state.
	prefaceDone bool
	sawSettings bool
	blk         block
	inBlock     bool
	// headTimer bounds a request head being received (the preface, a
	// HEADERS frame or header block not complete): RequestHeadersTimeout.
	headTimer *time.Timer
	headArmed bool
	// headTimedOut: the timeout fired; the connection is closing.
	headTimedOut bool
	dead         bool // a connection error was sent: input is ignored
	resets       int
	resetsSince  time.Time
	emptyFrames  int // consecutive empty DATA frames without END_STREAM
	// Flood accounting (Envoy's formulas): streams opened, PRIORITY and
	// WINDOW_UPDATE frames received.
	opened, priorities, windowUpdates            uint64
	maxEmpty, maxPriorityPerStream, maxWUPerData uint64

	// Guarded by mu.
	streams    map[uint32]*serverStream
	maxSeen    uint32
	recent     [recentClosed]closedStream // recently closed streams
	recentPos  int
	goingAway  bool
	lastID     uint32
	asyncFlush bool // a goroutine is about to flush the reader's frames
	// pendingStream is the request whose header block is being decoded.
	pendingStream *serverStream
}

var _ protocol.ServerCodec = (*serverConn)(nil)

func newServer(c protocol.Conn, opts protocol.ServerOptions, cb protocol.ServerCallbacks) protocol.ServerCodec {
	o := opts.HTTP2
	sc := &serverConn{c: c, opts: opts, cb: cb, streams: map[uint32]*serverStream{}}
	sc.maxStreams = orDefault(o.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	sc.maxResets = int(orDefault(o.MaxResetsPerSecond, DefaultMaxResetsPerSecond))
	sc.maxEmpty = uint64(orDefault(o.MaxConsecutiveEmptyFrames, DefaultMaxEmptyFrames))
	sc.maxPriorityPerStream = uint64(orDefault(o.MaxPriorityFramesPerStream, DefaultMaxPriorityPerStream))
	sc.maxWUPerData = uint64(orDefault(o.MaxWindowUpdatesPerDataFrame, DefaultMaxWindowUpdatesPerData))
	sc.maxControl = int(orDefault(o.MaxOutboundControlFrames, DefaultMaxControlFrames))
	if sc.opts.MaxHeaderBytes <= 0 {
		sc.opts.MaxHeaderBytes = 60 << 10
	}
	if sc.opts.Scheme == "" {
		sc.opts.Scheme = "http"
	}
	sc.init(c, int64(orDefault(o.InitialStreamWindowSize, DefaultStreamWindow)), int64(orDefault(o.InitialConnectionWindowSize, DefaultConnWindow)))
	sc.hdec = hpack.NewDecoder(4096, nil)
	sc.hdec.SetEmitFunc(sc.emit)
	sc.busy = func() bool { return len(sc.streams) > 1 }
	sc.mu.Lock()
	sc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: sc.maxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(sc.streamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(sc.opts.MaxHeaderBytes)},
	)
	if sc.connWindow > defaultWindow {
		sc.fr.WriteWindowUpdate(0, uint32(sc.connWindow-defaultWindow))
	}
	sc.flushLocked()
	sc.mu.Unlock()
	return sc
}

func orDefault(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

// Decode runs on the connection's reader: it takes every whole frame.
func (sc *serverConn) Decode(data []byte) int {
	if sc.dead {
		return len(data)
	}
	n := 0
	if !sc.prefaceDone {
		if len(data) < len(clientPreface) {
			if !bytes.HasPrefix(clientPreface, data) {
				sc.badPreface()
				return len(data)
			}
			sc.mu.Lock()
			sc.armHeadTimerLocked(true)
			sc.mu.Unlock()
			return 0
		}
		if !bytes.Equal(data[:len(clientPreface)], clientPreface) {
			sc.badPreface()
			return len(data)
		}
		sc.prefaceDone = true
		n = len(clientPreface)
	}
	for !sc.dead {
		rest := data[n:]
		if len(rest) < frameHeaderLen {
			break
		}
		length := int(rest[0])<<16 | int(rest[1])<<8 | int(rest[2])
		if length > minMaxFrameSize {
			sc.mu.Lock()
			sc.connError(http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")
			sc.mu.Unlock()
			break
		}
		if len(rest) < frameHeaderLen+length {
			break
		}
		sc.rd.b = rest[:frameHeaderLen+length]
		n += frameHeaderLen + length
		if st := sc.frame(); st != nil {
			sc.cb.OnStream(st)
		}
	}
	sc.mu.Lock()
	sc.flushAsyncLocked()
	sc.armHeadTimerLocked(sc.headPending(data[n:]))
	sc.mu.Unlock()
	if sc.dead {
		return len(data)
	}
	return n
}

// flushAsyncLocked has the frames the reader queued (acknowledgements,
// resets) written by a goroutine: the reader never blocks on a client that
// does not read (under epoll it is a shared poller), and what such a client
// keeps provoking piles up until controlFrame calls it a flood. mu held.
func (sc *serverConn) flushAsyncLocked() {
	if len(sc.ob.b) == 0 || sc.flushing || sc.asyncFlush {
		return
	}
	sc.asyncFlush = true
	go func() {
		sc.mu.Lock()
		sc.asyncFlush = false
		sc.flushLocked()
		sc.mu.Unlock()
	}()
}

func (sc *serverConn) badPreface() {
	sc.mu.Lock()
	sc.connError(http2.ErrCodeProtocol, "invalid connection preface")
	sc.mu.Unlock()
}

// frame reads and handles one buffered frame; it returns a new request
// to hand to a worker.
func (sc *serverConn) frame() *serverStream {
	fh, err := sc.fr.ReadFrameHeader()
	var f http2.Frame
	if err == nil {
		f, err = sc.fr.ReadFrameForHeader(fh)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if err != nil {
		sc.frameError(fh, err)
		return nil
	}
	if !sc.sawSettings {
		if s, ok := f.(*http2.SettingsFrame); !ok || s.IsAck() {
			sc.connError(http2.ErrCodeProtocol, "the first frame must be SETTINGS")
			return nil
		}
		sc.sawSettings = true
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		sc.onData(f)
	case *http2.HeadersFrame:
		return sc.onHeaders(f)
	case *http2.ContinuationFrame:
		return sc.onContinuation(f)
	case *http2.RSTStreamFrame:
		sc.onReset(f)
	case *http2.SettingsFrame:
		if !f.IsAck() {
			sc.controlFrame()
			if err := sc.applySettings(f, sc.adjustWindows); err != nil {
				sc.connErr(err)
			}
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			sc.controlFrame()
			sc.fr.WritePing(true, f.Data)
		}
	case *http2.WindowUpdateFrame:
		sc.onWindowUpdate(f)
	case *http2.GoAwayFrame:
		sc.goingAway = true
		sc.closeIfDoneLocked()
	case *http2.PushPromiseFrame:
		sc.connError(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
	case *http2.PriorityFrame:
		// Priorities are advisory (RFC 9113 deprecates them), but a stream
		// may not depend on itself (RFC 9113 §5.3.1). Their number is
		// bounded per opened stream (CVE-2019-9513).
		if sc.priorities++; sc.priorities > sc.maxPriorityPerStream*(1+sc.opened) {
			sc.connError(http2.ErrCodeEnhanceYourCalm, "too many PRIORITY frames")
			return nil
		}
		if f.StreamDep == f.StreamID {
			sc.refuse(f.StreamID, http2.ErrCodeProtocol)
		}
	}
	return nil
}

// controlFrame is called before answering a frame the peer provoked: a
// peer that never reads our answers is flooding.
func (sc *serverConn) controlFrame() {
	if sc.provokedLocked() {
		sc.connError(http2.ErrCodeEnhanceYourCalm, errFlood.Error())
	}
}

// frameError handles what the Framer rejected.
func (sc *serverConn) frameError(fh http2.FrameHeader, err error) {
	var se http2.StreamError
	switch {
	case errors.As(err, &se) && fh.Type != http2.FrameHeaders && fh.Type != http2.FrameContinuation:
		sc.refuse(se.StreamID, se.Code)
	case errors.As(err, &se):
		// The header block was not decoded, so HPACK state is lost.
		sc.connError(se.Code, "malformed HEADERS frame")
	default:
		sc.connErr(err)
	}
}

func (sc *serverConn) connErr(err error) {
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		sc.connError(http2.ErrCode(ce), err.Error())
		return
	}
	if errors.Is(err, http2.ErrFrameTooLarge) {
		sc.connError(http2.ErrCodeFrameSize, "frame too large")
		return
	}
	sc.connError(http2.ErrCodeProtocol, err.Error())
}

func (sc *serverConn) onData(f *http2.DataFrame) {
	id := f.StreamID
	n := int64(f.Length)
	// DATA frames that carry nothing and end nothing cost work and give no
	// progress (CVE-2019-9518, "empty frames flood").
	if sc.emptyFlood(len(f.Data()) == 0 && !f.StreamEnded()) { // padding alone counts as empty
		return
	}
	if n > sc.recvAvail {
		sc.connError(http2.ErrCodeFlowControl, "DATA beyond the connection window")
		return
	}
	sc.recvAvail -= n
	st := sc.streams[id]
	if st == nil || st.recvDone {
		sc.creditConn(n)
		if st != nil {
			sc.refuse(id, http2.ErrCodeStreamClosed)
			return
		}
		sc.closedOrIdle(id, "DATA")
		return
	}
	if code := sc.recvData(id, &st.flow, &st.in, n, f.Data()); code != 0 {
		sc.refuse(id, code)
		return
	}
	st.received += int64(len(f.Data()))
	if st.clen >= 0 && st.received > st.clen {
		sc.refuse(id, http2.ErrCodeProtocol)
		return
	}
	if f.StreamEnded() {
		sc.endRequest(st)
	}
}

// endRequest marks the request fully received. mu held.
func (sc *serverConn) endRequest(st *serverStream) {
	if st.clen >= 0 && st.received != st.clen {
		sc.refuse(st.id, http2.ErrCodeProtocol)
		return
	}
	st.recvDone = true
	st.in.eof = true
	st.in.cond.Broadcast()
	if st.sendDone {
		sc.forget(st)
	}
}

func (sc *serverConn) onHeaders(f *http2.HeadersFrame) *serverStream {
	id := f.StreamID
	if sc.emptyFlood(len(f.HeaderBlockFragment()) == 0 && !f.HeadersEnded() && !f.StreamEnded()) {
		return nil
	}
	if id%2 == 0 {
		sc.connError(http2.ErrCodeProtocol, "client stream with an even identifier")
		return nil
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		sc.connError(http2.ErrCodeProtocol, "stream depends on itself")
		return nil
	}
	lim := sc.opts.MaxHeaderBytes
	switch st := sc.streams[id]; {
	case st != nil && !st.recvDone:
		st.trailers.Reset()
		sc.blk.reset(blkTrailers, id, f.StreamEnded(), &st.trailers, lim, sc.opts.MaxHeaders)
	case st != nil || id <= sc.maxSeen:
		// Trailers after the end, or a reused identifier.
		sc.blk.reset(blkDiscard, id, f.StreamEnded(), nil, lim, 0)
		if st == nil {
			switch found, reset := sc.closedBy(id); {
			case !found:
				sc.blk.bad = "stream identifier reused"
			case !reset:
				sc.blk.closed = true
			}
		}
	default:
		sc.maxSeen = id
		st := newServerStream(sc, id)
		sc.blk.reset(blkRequest, id, f.StreamEnded(), &st.req, lim, sc.opts.MaxHeaders)
		sc.pendingStream = st
	}
	sc.inBlock = true
	return sc.fragment(f.HeaderBlockFragment(), f.HeadersEnded())
}

func (sc *serverConn) onContinuation(f *http2.ContinuationFrame) *serverStream {
	if sc.emptyFlood(len(f.HeaderBlockFragment()) == 0 && !f.HeadersEnded()) {
		return nil
	}
	return sc.fragment(f.HeaderBlockFragment(), f.HeadersEnded())
}

// fragment feeds a header block fragment to the decoder; at the block's
// end it acts on the block.
func (sc *serverConn) fragment(p []byte, end bool) *serverStream {
	b := &sc.blk
	b.raw += len(p)
	b.frames++
	if b.frames > maxBlockFrames || b.raw > 2*b.maxBytes+minMaxFrameSize {
		sc.connError(http2.ErrCodeEnhanceYourCalm, "header block too long (CONTINUATION flood)")
		return nil
	}
	sc.hdec.SetEmitEnabled(true)
	if _, err := sc.hdec.Write(p); err != nil {
		sc.connError(http2.ErrCodeCompression, err.Error())
		return nil
	}
	if !end {
		return nil
	}
	sc.inBlock = false
	if err := sc.hdec.Close(); err != nil {
		sc.connError(http2.ErrCodeCompression, err.Error())
		return nil
	}
	return sc.endBlock()
}

func (sc *serverConn) emit(f hpack.HeaderField) {
	if !sc.blk.emit(f) {
		sc.hdec.SetEmitEnabled(false)
	}
}

// endBlock acts on a complete header block. mu held.
func (sc *serverConn) endBlock() *serverStream {
	b := &sc.blk
	st := sc.pendingStream
	sc.pendingStream = nil
	switch b.kind {
	case blkDiscard:
		switch {
		case b.bad != "":
			sc.connError(http2.ErrCodeProtocol, b.bad)
		case b.closed:
			sc.connError(http2.ErrCodeStreamClosed, "HEADERS on a closed stream")
		default:
			sc.refuse(b.id, http2.ErrCodeStreamClosed)
		}
		return nil
	case blkTrailers:
		t := sc.streams[b.id]
		switch {
		case t == nil:
			// The stream ended while its trailers arrived.
		case b.bad != "" || !b.endStream:
			sc.refuse(b.id, http2.ErrCodeProtocol)
		case b.tooLarge:
			sc.refuse(b.id, http2.ErrCodeProtocol)
		default:
			t.hasTrailers = true
			t.in.trailers = true
			sc.endRequest(t)
		}
		return nil
	}
	if sc.goingAway && b.id > sc.lastID {
		st.release()
		return nil // RFC 9113 §6.8: ignored after GOAWAY
	}
	b.finishRequest()
	switch {
	case b.bad != "":
		st.release()
		sc.refuse(b.id, http2.ErrCodeProtocol)
		return nil
	case uint32(len(sc.streams)) >= sc.maxStreams:
		st.release()
		sc.refuse(b.id, http2.ErrCodeRefusedStream)
		return nil
	}
	st.clen = b.clen
	st.headersOnly = b.endStream
	st.expect = !b.endStream && expectsContinue(&st.req)
	sc.streams[b.id] = st
	sc.opened++
	if b.tooLarge {
		sc.localReply(st, 431)
		return nil
	}
	if b.endStream {
		if st.clen > 0 {
			sc.refuse(b.id, http2.ErrCodeProtocol)
			return nil
		}
		st.recvDone = true
		st.in.eof = true
	}
	return st
}

// localReply answers a request the codec refuses itself, headers only.
// mu held.
func (sc *serverConn) localReply(st *serverStream, status int) {
	sc.hbuf.Reset()
	sc.henc.WriteField(hpack.HeaderField{Name: ":status", Value: itoa(status)})
	sc.writeHeaderBlock(st.id, true)
	st.sendDone = true
	if st.recvDone || st.headersOnly {
		sc.forget(st)
	} else {
		sc.refuse(st.id, http2.ErrCodeNo)
	}
}

func (sc *serverConn) onWindowUpdate(f *http2.WindowUpdateFrame) {
	// A peer sending window updates that no data of ours calls for is
	// flooding (CVE-2019-9517 class); Envoy's bound, over the connection's
	// life: 5 + 2 × (streams opened + per-DATA limit × DATA frames sent).
	if sc.windowUpdates++; sc.windowUpdates > 5+2*(sc.opened+sc.maxWUPerData*sc.dataFrames) {
		sc.connError(http2.ErrCodeEnhanceYourCalm, "too many WINDOW_UPDATE frames")
		return
	}
	id := f.StreamID
	if id == 0 {
		if err := sc.connWindowUpdate(f.Increment); err != nil {
			sc.connError(http2.ErrCodeFlowControl, "connection window overflow")
		}
		return
	}
	st := sc.streams[id]
	if st == nil {
		if id > sc.maxSeen {
			sc.connError(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
		}
		return
	}
	if st.sendWindow+int64(f.Increment) > maxWindow {
		sc.refuse(id, http2.ErrCodeFlowControl)
		return
	}
	st.sendWindow += int64(f.Increment)
	sc.wcond.Broadcast()
}

// adjustWindows moves every open stream's send window by a change of
// SETTINGS_INITIAL_WINDOW_SIZE. mu held.
func (sc *serverConn) adjustWindows(delta int64) error {
	for _, st := range sc.streams {
		if st.sendWindow+delta > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		st.sendWindow += delta
	}
	return nil
}

// OnEOF: a client that half-closes an HTTP/2 connection is gone.
func (sc *serverConn) OnEOF() {
	sc.mu.Lock()
	sc.failStreams(protocol.ErrDownstreamReset)
	sc.mu.Unlock()
	sc.c.Close()
}

// OnClose fails every stream still in flight.
func (sc *serverConn) OnClose(err error) {
	sc.mu.Lock()
	sc.closed = true
	if sc.headArmed {
		sc.headArmed = false
		sc.headTimer.Stop()
	}
	if sc.werr == nil {
		sc.werr = protocol.ErrDownstreamReset
	}
	sc.failStreams(protocol.ErrDownstreamReset)
	sc.streams = map[uint32]*serverStream{}
	sc.mu.Unlock()
}

// Drain sends GOAWAY: streams already open finish, new ones are refused,
// and the connection closes when the last one ends.
func (sc *serverConn) Drain() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.goingAway || sc.dead {
		return
	}
	sc.goingAway = true
	sc.lastID = sc.maxSeen
	sc.fr.WriteGoAway(sc.lastID, http2.ErrCodeNo, nil)
	sc.flushAsyncLocked() // Drain may run on the reader
	sc.closeIfDoneLocked()
}

func (sc *serverConn) closeIfDoneLocked() {
	if sc.goingAway && len(sc.streams) == 0 && !sc.closed {
		sc.closed = true
		c := sc.c
		// A client that does not read cannot hold the connection open;
		// a slow one that keeps reading gets its last answer.
		last, checks := sc.written.Load(), 0
		wait, most := drainCloseWait, drainCloseChecks
		var watch func()
		watch = func() {
			now := sc.written.Load()
			if checks++; now == last || checks >= most {
				c.Close()
				return
			}
			last = now
			time.AfterFunc(wait, watch)
		}
		time.AfterFunc(wait, watch)
		go func() {
			sc.mu.Lock()
			sc.drainQueueLocked()
			sc.mu.Unlock()
			// Half-close, not close: the client still has up to a
			// socket buffer of our answer to read, and its window
			// updates arriving at a closed socket would draw a reset
			// that discards it. Its own close (read as EOF) or the
			// watchdog ends the connection.
			c.CloseWrite()
		}()
	}
}

// drainQueueLocked returns once everything queued was written (or the
// connection failed), whoever was flushing. mu held.
func (sc *serverConn) drainQueueLocked() {
	for sc.werr == nil && (sc.flushing || len(sc.ob.b) > 0) {
		if sc.flushing {
			sc.wcond.Wait()
			continue
		}
		sc.flushLocked()
	}
}

// Active reports the streams in flight.
func (sc *serverConn) Active() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return len(sc.streams)
}
