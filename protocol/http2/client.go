package http2

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientConn is one upstream HTTP/2 connection carrying many streams. Its
// reader goroutine decodes frames; each stream is used by one worker.
type clientConn struct {
	core
	nc   net.Conn
	opts protocol.MuxOptions

	// Guarded by mu.
	streams    map[uint32]*clientStream
	nextID     uint32
	reserved   int // streams handed out that have not sent HEADERS yet
	goingAway  bool
	dead       error
	lastActive time.Time
	pingSent   bool
	pingTimer  *time.Timer

	// Reader-only.
	blk     block
	blkSt   *clientStream
	discard protocol.Headers
}

var _ protocol.MuxConn = (*clientConn)(nil)

// maxStreamID is the last stream id a client may use.
const maxStreamID = 1<<31 - 1

// errGoingAway fails streams the server will not process (above its
// GOAWAY's last stream id, or refused): safe to retry on another
// connection.
var errGoingAway = protocol.ErrUpstreamResetBeforeResponse

func newMux(nc net.Conn, opts protocol.MuxOptions) protocol.MuxConn {
	o := opts.HTTP2
	cc := &clientConn{nc: nc, opts: opts, streams: map[uint32]*clientStream{}, nextID: 1, lastActive: time.Now()}
	cc.init(nc, int64(orDefault(o.InitialStreamWindowSize, DefaultStreamWindow)), int64(orDefault(o.InitialConnectionWindowSize, DefaultConnWindow)))
	cc.peerMaxStreams = 100 // until the server's SETTINGS say otherwise
	cc.connOnArrival = true
	cc.busy = func() bool { return len(cc.streams) > 1 }
	cc.hdec = hpack.NewDecoder(4096, nil)
	cc.hdec.SetEmitFunc(cc.emit)
	cc.mu.Lock()
	cc.ob.Write(clientPreface)
	cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(cc.streamWindow)},
	)
	if cc.connWindow > defaultWindow {
		cc.fr.WriteWindowUpdate(0, uint32(cc.connWindow-defaultWindow))
	}
	cc.flushLocked()
	cc.mu.Unlock()
	if opts.KeepaliveInterval > 0 {
		cc.pingTimer = time.AfterFunc(opts.KeepaliveInterval, cc.keepalive)
	}
	go cc.readLoop()
	return cc
}

// Capacity reports how many more streams the connection may open now.
func (cc *clientConn) Capacity() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.goingAway || cc.dead != nil {
		return 0
	}
	return max(cc.limit()-len(cc.streams)-cc.reserved, 0)
}

// limit is the streams allowed at once: the server's limit, capped by
// ours. mu held.
func (cc *clientConn) limit() int {
	n := int(cc.peerMaxStreams)
	if m := int(cc.opts.HTTP2.MaxConcurrentStreams); m > 0 && m < n {
		n = m
	}
	return n
}

// Active reports the streams open or reserved.
func (cc *clientConn) Active() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.streams) + cc.reserved
}

// Usable reports whether new streams may still go on the connection.
func (cc *clientConn) Usable() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return !cc.goingAway && cc.dead == nil
}

// IdleSince reports when the last stream ended (zero while one is open).
func (cc *clientConn) IdleSince() time.Time {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if len(cc.streams)+cc.reserved > 0 {
		return time.Time{}
	}
	return cc.lastActive
}

// NewStream reserves a stream; its id is taken when its headers are sent.
func (cc *clientConn) NewStream() (protocol.ClientStream, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.goingAway || cc.dead != nil || len(cc.streams)+cc.reserved >= cc.limit() {
		return nil, protocol.ErrMuxFull
	}
	cc.reserved++
	cs := &clientStream{cc: cc}
	cs.in.cond.L = &cc.mu
	return cs, nil
}

// Close closes the connection; streams in flight fail.
func (cc *clientConn) Close() error {
	cc.fail(protocol.ErrUpstreamReset)
	return cc.nc.Close()
}

// Shutdown sends GOAWAY and closes once the streams in flight finish.
func (cc *clientConn) Shutdown() {
	cc.mu.Lock()
	if !cc.goingAway && cc.dead == nil {
		cc.goingAway = true
		cc.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		cc.flushLocked()
	}
	idle := len(cc.streams)+cc.reserved == 0
	cc.mu.Unlock()
	if idle {
		cc.Close()
	}
}

// fail marks the connection dead and fails every stream with err.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.dead != nil {
		return
	}
	cc.dead = err
	if cc.werr == nil {
		cc.werr = err
	}
	for _, cs := range cc.streams {
		cs.failLocked(err) // a complete answer is still read to its end
	}
	cc.wcond.Broadcast()
	if cc.pingTimer != nil {
		cc.pingTimer.Stop()
	}
	if cc.opts.OnClose != nil {
		go cc.opts.OnClose()
	}
}

// readLoop reads frames until the connection fails.
func (cc *clientConn) readLoop() {
	buf := make([]byte, 64<<10)
	have := 0
	for {
		n, err := cc.nc.Read(buf[have:])
		have += n
		used, ferr := cc.decode(buf[:have])
		copy(buf, buf[used:have])
		have -= used
		if ferr == nil && err != nil {
			ferr = err
		}
		if ferr != nil {
			if ferr == io.EOF || errors.Is(ferr, net.ErrClosed) {
				ferr = protocol.ErrUpstreamReset
			}
			cc.fail(ferr)
			cc.nc.Close()
			return
		}
	}
}

// decode handles every whole frame in data.
func (cc *clientConn) decode(data []byte) (int, error) {
	n := 0
	for {
		rest := data[n:]
		if len(rest) < frameHeaderLen {
			return n, nil
		}
		length := int(rest[0])<<16 | int(rest[1])<<8 | int(rest[2])
		if length > minMaxFrameSize {
			return n, cc.connError(http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")
		}
		if len(rest) < frameHeaderLen+length {
			return n, nil
		}
		cc.rd.b = rest[:frameHeaderLen+length]
		n += frameHeaderLen + length
		if err := cc.frame(); err != nil {
			return n, err
		}
	}
}

// connError sends GOAWAY and reports the error that ends the connection.
func (cc *clientConn) connError(code http2.ErrCode, reason string) error {
	cc.mu.Lock()
	cc.fr.WriteGoAway(0, code, []byte(reason))
	cc.flushLocked()
	cc.mu.Unlock()
	return &protocol.MalformedError{Reason: "HTTP/2 " + code.String() + ": " + reason}
}

func (cc *clientConn) frame() error {
	fh, err := cc.fr.ReadFrameHeader()
	var f http2.Frame
	if err == nil {
		f, err = cc.fr.ReadFrameForHeader(fh)
	}
	if err != nil {
		var se http2.StreamError
		if errors.As(err, &se) && fh.Type != http2.FrameHeaders && fh.Type != http2.FrameContinuation {
			cc.mu.Lock()
			cc.resetLocked(se.StreamID, se.Code, &protocol.MalformedError{Reason: "HTTP/2 stream error " + se.Code.String()})
			cc.flushLocked()
			cc.mu.Unlock()
			return nil
		}
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return cc.connError(http2.ErrCode(ce), "invalid frame")
		}
		return cc.connError(http2.ErrCodeProtocol, err.Error())
	}
	cc.mu.Lock()
	defer func() {
		cc.flushLocked()
		cc.mu.Unlock()
	}()
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			if err := cc.applySettings(f, cc.adjustWindows); err != nil {
				cc.mu.Unlock()
				err = cc.connError(http2.ErrCodeFlowControl, "bad SETTINGS")
				cc.mu.Lock()
				return err
			}
			if cc.opts.OnCapacity != nil {
				go cc.opts.OnCapacity()
			}
		}
	case *http2.HeadersFrame:
		return cc.onHeaders(f.StreamID, f.HeaderBlockFragment(), f.HeadersEnded(), f.StreamEnded(), true)
	case *http2.ContinuationFrame:
		return cc.onHeaders(f.StreamID, f.HeaderBlockFragment(), f.HeadersEnded(), cc.blk.endStream, false)
	case *http2.DataFrame:
		cc.onData(f)
	case *http2.RSTStreamFrame:
		if cs := cc.streams[f.StreamID]; cs != nil {
			var err error = protocol.ErrUpstreamReset
			if f.ErrCode == http2.ErrCodeRefusedStream && !cs.gotHeaders {
				err = errGoingAway
			}
			if f.ErrCode == http2.ErrCodeNo && cs.respDone {
				// The server answered in full and wants no more of the
				// request: stop sending, keep the answer.
				cs.stopSend = true
				cs.reset = true // closed by the server: never answered with a reset
				cc.wcond.Broadcast()
				return nil
			}
			cs.failLocked(err)
			cs.reset = true
		}
	case *http2.PingFrame:
		if f.IsAck() {
			cc.pingSent = false
		} else if !cc.provokedLocked() {
			cc.fr.WritePing(true, f.Data)
		}
	case *http2.GoAwayFrame:
		cc.goingAway = true
		for id, cs := range cc.streams {
			if id > f.LastStreamID {
				cs.failLocked(errGoingAway)
			}
		}
		if len(cc.streams)+cc.reserved == 0 {
			go cc.Close()
		} else if cc.opts.OnCapacity != nil {
			go cc.opts.OnCapacity() // waiters may dial a new connection
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			if err := cc.connWindowUpdate(f.Increment); err != nil {
				cc.mu.Unlock()
				err = cc.connError(http2.ErrCodeFlowControl, "connection window overflow")
				cc.mu.Lock()
				return err
			}
		} else if cs := cc.streams[f.StreamID]; cs != nil {
			if cs.sendWindow+int64(f.Increment) > maxWindow {
				cc.resetLocked(f.StreamID, http2.ErrCodeFlowControl, protocol.ErrUpstreamReset)
				return nil
			}
			cs.sendWindow += int64(f.Increment)
			cc.wcond.Broadcast()
		}
	case *http2.PushPromiseFrame:
		cc.mu.Unlock()
		err := cc.connError(http2.ErrCodeProtocol, "PUSH_PROMISE though push is disabled")
		cc.mu.Lock()
		return err
	}
	return nil
}

// adjustWindows applies a change of the server's initial window. mu held.
func (cc *clientConn) adjustWindows(delta int64) error {
	for _, cs := range cc.streams {
		if cs.sendWindow+delta > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		cs.sendWindow += delta
	}
	return nil
}

// onHeaders decodes response headers or trailers. mu held.
func (cc *clientConn) onHeaders(id uint32, frag []byte, endHeaders, endStream, first bool) error {
	if first {
		cs := cc.streams[id]
		cc.blkSt = cs
		switch {
		case cs == nil || cs.respDone:
			cc.discard.Reset()
			cc.blk.reset(blkDiscard, id, endStream, &cc.discard, 1<<20, 0)
		case !cs.gotHeaders:
			cs.resp.Reset()
			cc.blk.reset(blkResponse, id, endStream, &cs.resp, 1<<20, 0)
		default:
			cs.trailers.Reset()
			cc.blk.reset(blkTrailers, id, endStream, &cs.trailers, 1<<20, 0)
		}
	}
	b := &cc.blk
	b.frames++
	if b.frames > maxBlockFrames {
		return errors.New("http2: upstream header block has too many CONTINUATION frames")
	}
	cc.hdec.SetEmitEnabled(true)
	if _, err := cc.hdec.Write(frag); err != nil {
		return &protocol.MalformedError{Reason: "HPACK: " + err.Error()}
	}
	if !endHeaders {
		return nil
	}
	if err := cc.hdec.Close(); err != nil {
		return &protocol.MalformedError{Reason: "HPACK: " + err.Error()}
	}
	cs := cc.blkSt
	cc.blkSt = nil
	if cs == nil || b.kind == blkDiscard {
		return nil
	}
	if b.bad != "" || b.tooLarge || (b.kind == blkResponse && b.pseudo&psStatus == 0) || (b.kind == blkTrailers && !b.endStream) {
		reason := b.bad
		if reason == "" {
			reason = "invalid response header block"
		}
		cc.resetLocked(id, http2.ErrCodeProtocol, &protocol.MalformedError{Reason: reason})
		return nil
	}
	if b.kind == blkResponse {
		code := cs.resp.StatusCode()
		if code >= 100 && code < 200 {
			if code == 100 {
				cs.continues++
				cs.in.cond.Broadcast()
			}
			return nil // interim: wait for the final answer
		}
		cs.gotHeaders = true
		cs.endOnHeaders = b.endStream
	} else {
		cs.hasTrailers = true
		cs.in.trailers = true
	}
	if b.endStream {
		cs.respDone = true
		cs.in.eof = true
	}
	cs.in.cond.Broadcast()
	return nil
}

func (cc *clientConn) emit(f hpack.HeaderField) {
	if !cc.blk.emit(f) {
		cc.hdec.SetEmitEnabled(false)
	}
}

// onData takes response body bytes. mu held.
func (cc *clientConn) onData(f *http2.DataFrame) {
	n := int64(f.Length)
	cc.recvAvail -= n
	cs := cc.streams[f.StreamID]
	if cs == nil || cs.respDone || !cs.gotHeaders {
		cc.creditConn(n)
		if cs != nil {
			cc.resetLocked(f.StreamID, http2.ErrCodeStreamClosed, &protocol.MalformedError{Reason: "DATA before response headers or after the end"})
		}
		return
	}
	if code := cc.recvData(f.StreamID, &cs.flow, &cs.in, n, f.Data()); code != 0 {
		cc.resetLocked(f.StreamID, code, protocol.ErrUpstreamReset)
		return
	}
	if f.StreamEnded() {
		cs.respDone = true
		cs.in.eof = true
		cs.in.cond.Broadcast()
	}
}

// resetLocked sends RST_STREAM and fails the stream with err. mu held.
func (cc *clientConn) resetLocked(id uint32, code http2.ErrCode, err error) {
	cc.fr.WriteRSTStream(id, code)
	if cs := cc.streams[id]; cs != nil {
		cs.failLocked(err)
		cs.reset = true
	}
}

// keepalive runs every keepalive interval: it closes the connection when
// the previous PING went unanswered, else sends another.
func (cc *clientConn) keepalive() {
	cc.mu.Lock()
	if cc.dead != nil {
		cc.mu.Unlock()
		return
	}
	if cc.pingSent {
		cc.mu.Unlock()
		cc.Close()
		return
	}
	cc.pingSent = true
	cc.fr.WritePing(false, [8]byte{'s', 't', 'r', 'a', 'i', 't'})
	cc.flushLocked()
	cc.mu.Unlock()
	cc.pingTimer.Reset(cc.opts.KeepaliveInterval)
}
