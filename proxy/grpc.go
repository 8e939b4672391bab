package proxy

import (
	"strconv"
	"time"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
)

// gRPC status codes the proxy produces or retries on.
const (
	grpcCancelled         = 1
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// isGRPC reports whether a request is a gRPC call (its content-type is
// application/grpc or application/grpc+proto and the like).
func isGRPC(h *protocol.Headers) bool {
	ct, _ := h.Get("content-type")
	const prefix = "application/grpc"
	if len(ct) < len(prefix) || !protocol.EqualFold(ct[:len(prefix)], prefix) {
		return false
	}
	return len(ct) == len(prefix) || ct[len(prefix)] == '+' || ct[len(prefix)] == ';'
}

// grpcTimeout parses a grpc-timeout header: at most 8 digits and a unit
// (H, M, S, m, u, n).
func grpcTimeout(h *protocol.Headers) (time.Duration, bool) {
	v, ok := h.Get("grpc-timeout")
	if !ok || len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v[:len(v)-1]), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(maxGRPCTimeout/unit) {
		return maxGRPCTimeout, true // a deadline beyond any route timeout
	}
	return time.Duration(n) * unit, true
}

// tellGRPCTimeout sets the attempt's grpc-timeout under max_grpc_timeout,
// as Envoy does: what is left of the call's timeout (left, 0: none), or
// the per-try timeout when shorter.
func (s *Stream) tellGRPCTimeout(left time.Duration) {
	d := left
	if p := s.route.Retry; p != nil && p.PerTryTimeout > 0 && (d == 0 || p.PerTryTimeout < d) {
		d = p.PerTryTimeout
	}
	if d > 0 {
		s.scratch = appendGRPCTimeout(s.scratch[:0], d)
		s.req.SetBytes("grpc-timeout", s.scratch)
	}
}

// appendGRPCTimeout appends d as a grpc-timeout value: at most 8 digits,
// in the finest unit from milliseconds up that holds it (rounded up).
func appendGRPCTimeout(b []byte, d time.Duration) []byte {
	for _, u := range []struct {
		unit time.Duration
		c    byte
	}{{time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'}} {
		if n := (d + u.unit - 1) / u.unit; n <= 99999999 || u.c == 'H' {
			return append(strconv.AppendInt(b, int64(min(n, 99999999)), 10), u.c)
		}
	}
	return b
}

// maxGRPCTimeout clamps grpc-timeout values that overflow a Duration.
const maxGRPCTimeout = 100 * 365 * 24 * time.Hour

// capByGRPCTimeout lets a gRPC client's deadline shorten the route
// timeout (or stand for it when the route has none).
func (s *Stream) capByGRPCTimeout() {
	if !s.grpc {
		return
	}
	d, ok := grpcTimeout(s.req)
	if !ok {
		return
	}
	if t := s.start.Add(d); s.deadline.IsZero() || t.Before(s.deadline) {
		s.deadline = t
	}
}

// capByCallTimeout lets an RPC caller's timeout (milliseconds, from its
// call: Dubbo's "timeout" attachment) shorten the route timeout.
func (s *Stream) capByCallTimeout() {
	if !s.cfg.RPC {
		return
	}
	v, ok := s.req.Get(protocol.RPCTimeout)
	if !ok || len(v) == 0 || len(v) > 9 {
		return
	}
	var ms int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return
		}
		ms = ms*10 + int64(c-'0')
	}
	if ms == 0 {
		return
	}
	if t := s.start.Add(time.Duration(ms) * time.Millisecond); s.deadline.IsZero() || t.Before(s.deadline) {
		s.deadline = t
	}
}

// grpcStatusFor maps a local reply's HTTP status to a gRPC status, as the
// gRPC spec's HTTP-to-gRPC table does.
func grpcStatusFor(code int) int {
	switch code {
	case 400:
		return grpcInternal
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404:
		return grpcUnimplemented
	case 429, 502, 503:
		return grpcUnavailable
	case 408, 504: // 408: a stream's max duration, or the request's timeout
		return grpcDeadlineExceeded
	}
	return grpcUnknown
}

// grpcReply answers a gRPC call locally: HTTP 200 with the status in
// grpc-status and grpc-message, headers only (a "trailers-only" response).
func (s *Stream) grpcReply(code int, msg string) {
	h := s.startReply(200)
	h.Set("content-type", "application/grpc")
	s.scratch = strconv.AppendInt(s.scratch[:0], int64(grpcStatusFor(code)), 10)
	h.SetBytes("grpc-status", s.scratch)
	if msg != "" {
		h.SetBytes("grpc-message", percentEncode(s.scratch[:0], msg))
	}
	if s.respStarted {
		s.resetDownstream()
		return
	}
	if s.fx != nil && s.fx.edit != nil {
		s.fx.edit(h)
	}
	if s.encN > 0 {
		s.encodeHeaders(h, true)
	}
	s.finalizeResponseHeaders(h)
	s.respStarted = true
	s.status = 200
	if err := s.ds.WriteHeaders(h, true); err != nil {
		s.resetDownstream()
	}
}

// percentEncode encodes a grpc-message: printable ASCII but '%' as is,
// everything else as %XX (gRPC's HTTP/2 protocol document).
func percentEncode(dst []byte, msg string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hex[c>>4], hex[c&15])
	}
	return dst
}

// grpcRetry reports whether a trailers-only gRPC answer's status is one
// the retry policy retries (cancelled, deadline-exceeded, internal,
// resource-exhausted, unavailable).
func grpcRetry(p *router.RetryPolicy, resp *protocol.Headers) bool {
	v, ok := resp.Get("grpc-status")
	if !ok {
		return false
	}
	code, err := strconv.Atoi(string(v))
	if err != nil {
		return false
	}
	var need router.RetryOn
	switch code {
	case grpcCancelled:
		need = router.RetryGRPCCancelled
	case grpcDeadlineExceeded:
		need = router.RetryGRPCDeadlineExceeded
	case grpcInternal:
		need = router.RetryGRPCInternal
	case grpcResourceExhausted:
		need = router.RetryGRPCResourceExhausted
	case grpcUnavailable:
		need = router.RetryGRPCUnavailable
	default:
		return false
	}
	return p.On&need != 0
}

// grpcHTTPStatus is the HTTP status a gRPC status stands for (the
// mapping of gRPC's HTTP-to-gRPC table read backwards, as Envoy uses it
// for outlier detection).
func grpcHTTPStatus(code int) int {
	switch code {
	case 0: // OK
		return 200
	case grpcCancelled:
		return 499
	case 3, 9, 11: // invalid argument, failed precondition, out of range
		return 400
	case grpcDeadlineExceeded:
		return 504
	case 5: // not found
		return 404
	case 6, 10: // already exists, aborted
		return 409
	case grpcPermissionDenied:
		return 403
	case grpcResourceExhausted:
		return 429
	case grpcUnimplemented:
		return 501
	case grpcUnavailable:
		return 503
	case grpcUnauthenticated:
		return 401
	}
	return 500 // unknown, internal, data loss and any other
}
