package proxy

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/straitproxy/strait/protocol"
)

// hopByHop are the fields that describe one connection, never forwarded
// (RFC 9110 §7.6.1), plus the ones Envoy also strips.
var hopByHop = [...]string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}

// decodeHeaders prepares the request for forwarding: removes hop-by-hop
// fields (keeping an allowed upgrade), sets x-forwarded-for/-proto and
// x-request-id.
func (s *Stream) decodeHeaders() bool {
	h := s.req
	if s.cfg.RPC {
		if len(s.cfg.Filters) > 0 {
			s.info.ClientAddr = s.clientAddr(h)
		}
		return true
	}
	if !s.normalizePath(h) {
		return false
	}
	s.upgrade = s.wantsUpgrade()
	s.grpc = isGRPC(h)
	if h.HasToken("connection", "close") || s.ds.Protocol() == "HTTP/1.0" && !h.HasToken("connection", "keep-alive") {
		s.closeAfter = true // (an HTTP/1.0 client keeps the connection only when it asks)
	}
	s.removeConnectionListed(h)
	for _, name := range hopByHop {
		switch {
		case s.upgrade && name == "upgrade":
			continue
		case name == "te":
			if v, ok := h.Get("te"); ok && protocol.EqualFold(protocol.TrimOWS(v), "trailers") {
				continue
			}
		}
		h.Del(name)
	}
	if s.upgrade {
		h.Set("connection", "upgrade")
	}
	s.expectContinue(h)
	if len(s.cfg.Filters) > 0 {
		s.info.ClientAddr = s.clientAddr(h) // for the filters (remote_ip)
	}
	s.forwardedFor(h)
	s.clientCert(h)
	// No address is internal without internal_address_config (refused):
	// as Envoy does for every request that is not internal, the client's
	// x-envoy-force-trace is dropped.
	h.Del(forceTraceHdr)
	// An edge request gets a fresh id (Envoy: unless
	// preserve_external_request_id), any other one when it has none.
	if s.cfg.GenerateRequestID && (s.cfg.UseRemoteAddress || !h.Has("x-request-id")) {
		var id [36]byte
		h.SetBytes("x-request-id", uuid4(id[:0]))
	}
	s.decideTrace(h)
	return true
}

// expectContinue keeps Expect: 100-continue for the upstream when the
// connection manager relays 100 Continue (proxy_100_continue) and the
// client waits for it; otherwise the codec answers it and the field goes.
func (s *Stream) expectContinue(h *protocol.Headers) {
	if s.cfg.Proxy100Continue {
		if c, ok := s.ds.(protocol.Continuer); ok && c.ExpectsContinue() {
			c.ProxyContinue()
			s.relayContinue = true
			if s.continueFn == nil {
				s.continueFn = s.sendContinue
			}
			return
		}
	}
	h.Del("expect")
}

// sendContinue relays the upstream's 100 Continue to the client (once: a
// retry's upstream may send its own). A failed write surfaces on the
// response.
func (s *Stream) sendContinue() {
	if c, ok := s.ds.(protocol.Continuer); ok {
		c.SendContinue()
	}
}

func (s *Stream) wantsUpgrade() bool {
	h := s.req
	if len(s.cfg.Upgrades) == 0 || !h.HasToken("connection", "upgrade") {
		return false
	}
	v, ok := h.Get("upgrade")
	if !ok {
		return false
	}
	var lower [32]byte
	if len(v) > len(lower) {
		return false
	}
	for i, c := range v {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	return s.cfg.Upgrades[string(lower[:len(v)])]
}

// removeConnectionListed drops the fields the Connection header names.
func (s *Stream) removeConnectionListed(h *protocol.Headers) {
	v, ok := h.Get("connection")
	if !ok {
		return
	}
	s.scratch = append(s.scratch[:0], v...)
	list := s.scratch
	for len(list) > 0 {
		var item []byte
		item, list = nextItem(list)
		item = protocol.TrimOWS(item)
		for i := range item {
			if 'A' <= item[i] && item[i] <= 'Z' {
				item[i] += 'a' - 'A'
			}
		}
		switch string(item) {
		case "", "close", "keep-alive", "upgrade":
			continue
		}
		if len(item) > 0 && item[0] != ':' && string(item) != "host" {
			h.Del(string(item))
		}
	}
}

func nextItem(v []byte) (item, rest []byte) {
	for i, c := range v {
		if c == ',' {
			return v[:i], v[i+1:]
		}
	}
	return v, nil
}

// forwardedFor appends the client's address to x-forwarded-for when this
// proxy is the edge (use_remote_address) and sets x-forwarded-proto.
func (s *Stream) forwardedFor(h *protocol.Headers) {
	scheme := s.cm.scheme
	if !s.cfg.UseRemoteAddress {
		if !h.Has("x-forwarded-proto") {
			h.Set("x-forwarded-proto", scheme)
		}
		return
	}
	ip := remoteIP(s.info.RemoteAddr)
	if old, ok := h.Get("x-forwarded-for"); ok && len(old) > 0 {
		s.scratch = append(append(append(s.scratch[:0], old...), ", "...), ip...)
	} else {
		s.scratch = append(s.scratch[:0], ip...)
	}
	h.SetBytes("x-forwarded-for", s.scratch)
	h.Set("x-forwarded-proto", scheme)
}

// clientAddr is the original client's address (filter.StreamInfo's
// ClientAddr), read before this proxy appends to x-forwarded-for.
func (s *Stream) clientAddr(h *protocol.Headers) netip.Addr {
	direct := addrOf(s.info.RemoteAddr)
	xff, ok := h.Get("x-forwarded-for")
	if !ok || len(xff) == 0 {
		return direct
	}
	// Entries from the right to pass over: the trusted hops (with
	// use_remote_address, the peer is the first of them).
	skip := s.cfg.XffNumTrustedHops
	if s.cfg.UseRemoteAddress {
		if skip <= 0 {
			return direct
		}
		skip--
	}
	end := len(xff)
	for i := len(xff) - 1; i >= -1; i-- {
		if i >= 0 && xff[i] != ',' {
			continue
		}
		if skip == 0 {
			if a, err := netip.ParseAddr(string(protocol.TrimOWS(xff[i+1 : end]))); err == nil {
				return a.Unmap()
			}
			return direct
		}
		skip--
		end = i
	}
	return direct
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// finalizeResponseHeaders strips hop-by-hop fields from a response (and
// the fields its Connection header names) and adds what the connection
// manager owns: server, connection: close.
func (s *Stream) finalizeResponseHeaders(h *protocol.Headers) {
	if s.cfg.RPC {
		return
	}
	tunnel := s.upgrade && h.StatusCode() == 101
	s.removeConnectionListed(h) // RFC 9110 §7.6.1, as for requests
	for _, name := range hopByHop {
		if tunnel && (name == "upgrade" || name == "connection") {
			continue
		}
		h.Del(name)
	}
	if s.cfg.ServerName != "" {
		h.Set("server", s.cfg.ServerName)
	}
	if s.cfg.AlwaysSetRequestIDInResponse || s.req.Has(forceTraceHdr) {
		if id, ok := s.req.Get("x-request-id"); ok {
			h.SetBytes("x-request-id", id)
		}
	}
	if s.attempt > 0 { // an upstream's answer, or ours after attempts
		s.setAttemptCount(h, false)
	}
	if s.cfg.Draining != nil && s.cfg.Draining() {
		s.closeAfter = true
	}
	if s.closeAfter && !tunnel {
		h.Set("connection", "close")
	}
	s.keepTrailers(h)
}

// keepTrailers makes room for announced trailers on an HTTP/1.1 client:
// an HTTP/2 upstream may send Content-Length and trailers together, but
// HTTP/1.1 carries trailers only in chunked framing.
func (s *Stream) keepTrailers(h *protocol.Headers) {
	if s.h2 || s.ds.Protocol() != "HTTP/1.1" || !h.Has("trailer") || string(s.req.Method()) == "HEAD" {
		return
	}
	if c := h.StatusCode(); c == 204 || c == 304 {
		return
	}
	h.Del("content-length")
}

// attemptCountHeader is the header include_request_attempt_count and
// include_attempt_count_in_response set.
const attemptCountHeader = "x-envoy-attempt-count"

// setAttemptCount sets x-envoy-attempt-count on h to the attempt's
// number when the virtual host asks for it (up: on the request).
func (s *Stream) setAttemptCount(h *protocol.Headers, up bool) {
	if s.route == nil {
		return
	}
	vh := s.route.VirtualHost
	if vh == nil || up && !vh.AttemptCountUp || !up && !vh.AttemptCountDown {
		return
	}
	s.scratch = strconv.AppendInt(s.scratch[:0], int64(s.attempt), 10)
	h.SetBytes(attemptCountHeader, s.scratch)
}

// upstreamServiceTime sets x-envoy-upstream-service-time in milliseconds;
// the moment is the response's start for access logs.
func (s *Stream) upstreamServiceTime(h *protocol.Headers) {
	now := time.Now()
	if s.cfg.AccessLogs != nil {
		s.respAt = now
	}
	s.scratch = strconv.AppendInt(s.scratch[:0], now.Sub(s.upStart).Milliseconds(), 10)
	h.SetBytes("x-envoy-upstream-service-time", s.scratch)
}

// uuid4 appends a random RFC 4122 version 4 UUID.
func uuid4(dst []byte) []byte {
	const hex = "0123456789abcdef"
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i] = byte(a >> (8 * i))
		b[8+i] = byte(c >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[x>>4], hex[x&0xf])
	}
	return dst
}
