package proxy

import (
	"time"

	"github.com/straitproxy/strait/protocol"
)

// Timeouts on reading the request body: request_timeout bounds the whole
// request, stream_idle_timeout the silence between body bytes. When one
// fires, the pending body read fails and the request is answered with 408
// (when no response started) and the connection closed, as Envoy does.
var (
	errRequestTimeout = &protocol.RequestError{Status: 408, Reason: "request timeout"}
	errStreamTimeout  = &protocol.RequestError{Status: 408, Reason: "stream timeout"}
	// errMaxDuration: the route's max_stream_duration passed while the
	// request body was still coming.
	errMaxDuration = &protocol.RequestError{Status: 408, Reason: "downstream duration timeout"}
)

// armBodyTimer (re)starts the timer for the next body read: the sooner of
// the idle timeout and what is left of the request timeout.
func (s *Stream) armBodyTimer() {
	rc, ok := s.ds.(protocol.ReadCanceler)
	if !ok {
		return
	}
	d := s.cfg.StreamIdleTimeout
	if rt := s.cfg.RequestTimeout; rt > 0 {
		if left := time.Until(s.start.Add(rt)); d <= 0 || left < d {
			d = max(left, time.Nanosecond)
		}
	}
	if !s.durAt.IsZero() {
		if left := time.Until(s.durAt); d <= 0 || left < d {
			d = max(left, time.Nanosecond)
		}
	}
	if d <= 0 {
		return
	}
	if s.bodyTimer == nil {
		// The callback touches only values fixed for this request, never
		// the Stream, which may be reused once the request ends; the
		// cancel function is bound to this request.
		cfg, start, durAt, cancel := s.cfg, s.start, s.durAt, rc.ReadCancel()
		s.bodyTimer = time.AfterFunc(d, func() { bodyTimeout(cfg, start, durAt, cancel) })
		return
	}
	s.bodyTimer.Reset(d)
}

func bodyTimeout(cfg *Config, start, durAt time.Time, cancel func(error)) {
	if !durAt.IsZero() && !time.Now().Before(durAt) {
		cancel(errMaxDuration) // counted as the stream answers
		return
	}
	if rt := cfg.RequestTimeout; rt > 0 && !time.Now().Before(start.Add(rt)) {
		cfg.Stats.RqTimeout.Inc()
		cancel(errRequestTimeout)
		return
	}
	cfg.Stats.RqIdleTimeout.Inc()
	cancel(errStreamTimeout)
}

func (s *Stream) stopBodyTimer() {
	if s.bodyTimer != nil {
		s.bodyTimer.Stop()
	}
}
