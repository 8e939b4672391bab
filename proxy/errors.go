package proxy

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/upstream"
)

// Source says who caused an error.
type Source uint8

// Error sources.
const (
	Downstream Source = iota + 1
	Upstream
	Internal
)

// Kind classifies a data-plane error once, where it happens.
type Kind uint8

// Error kinds; each maps to one local reply in replyFor.
const (
	KindConnectFailure Kind = iota + 1
	KindOverflow
	KindNoHealthy
	KindResetBeforeHeaders
	KindReset
	KindTimeout
	KindPerTryTimeout
	KindMalformed
	KindDownstreamReset
	KindNoCluster
	// KindStreamIdleTimeout: nothing moved on the stream for the stream
	// idle timeout (the route's idle_timeout, else stream_idle_timeout).
	KindStreamIdleTimeout
	// KindMaxDuration: the route's max_stream_duration passed.
	KindMaxDuration
)

// Error is a classified data-plane error.
type Error struct {
	Kind      Kind
	Source    Source
	Retryable bool
	Err       error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return replyFor(e).body
}

func (e *Error) Unwrap() error { return e.Err }

type reply struct {
	status     int
	body       string
	overloaded bool
	// flag is Envoy's response flag for the cause (access logs'
	// %RESPONSE_FLAGS%), details its %RESPONSE_CODE_DETAILS%.
	flag    accesslog.Flags
	details string
}

// replyFor is the one place that maps errors to local replies, in Envoy's
// words.
func replyFor(e *Error) reply {
	const prefix = "upstream connect error or disconnect/reset before headers. reset reason: "
	switch e.Kind {
	case KindConnectFailure:
		return reply{503, prefix + "connection failure", false, accesslog.UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}"}
	case KindOverflow:
		return reply{503, prefix + "overflow", true, accesslog.UpstreamOverflow, "upstream_reset_before_response_started{overflow}"}
	case KindNoHealthy:
		return reply{503, "no healthy upstream", false, accesslog.NoHealthyUpstream, "no_healthy_upstream"}
	case KindResetBeforeHeaders, KindReset:
		return reply{503, prefix + "connection termination", false, accesslog.UpstreamConnectionTermination, "upstream_reset_before_response_started{connection_termination}"}
	case KindTimeout, KindPerTryTimeout:
		return reply{504, "upstream request timeout", false, accesslog.UpstreamRequestTimeout, "upstream_response_timeout"}
	case KindStreamIdleTimeout:
		return reply{504, "stream timeout", false, accesslog.StreamIdleTimeout, "stream_idle_timeout"}
	case KindMaxDuration:
		return reply{408, "downstream duration timeout", false, accesslog.DurationTimeout, "max_duration_timeout"}
	case KindMalformed:
		return reply{502, "upstream sent a malformed response", false, accesslog.UpstreamProtocolError, "upstream_reset_before_response_started{protocol_error}"}
	case KindNoCluster:
		return reply{503, "cluster not found", false, accesslog.NoClusterFound, "cluster_not_found"}
	case KindDownstreamReset:
		return reply{499, "client disconnected", false, accesslog.DownstreamConnectionTermination, "downstream_remote_disconnect"}
	}
	return reply{500, "internal error", false, 0, "internal_error"}
}

// classify turns an upstream-side error into an *Error.
func classify(err error, perTry bool) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	var ce *upstream.ConnectError
	var me *protocol.MalformedError
	var ne net.Error
	switch {
	case errors.Is(err, upstream.ErrPendingOverflow), errors.Is(err, upstream.ErrConnectionOverflow):
		return &Error{Kind: KindOverflow, Source: Upstream, Err: err}
	case errors.Is(err, upstream.ErrPendingTimeout):
		return &Error{Kind: KindTimeout, Source: Upstream, Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Kind: KindDownstreamReset, Source: Downstream, Err: err}
	case errors.As(err, &ce):
		return &Error{Kind: KindConnectFailure, Source: Upstream, Retryable: true, Err: err}
	case errors.As(err, &me):
		return &Error{Kind: KindMalformed, Source: Upstream, Err: err}
	case errors.Is(err, protocol.ErrDownstreamReset):
		return &Error{Kind: KindDownstreamReset, Source: Downstream, Err: err}
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		if perTry {
			return &Error{Kind: KindPerTryTimeout, Source: Upstream, Retryable: true, Err: err}
		}
		return &Error{Kind: KindTimeout, Source: Upstream, Err: err}
	case errors.Is(err, protocol.ErrUpstreamResetBeforeResponse):
		return &Error{Kind: KindResetBeforeHeaders, Source: Upstream, Retryable: true, Err: err}
	}
	return &Error{Kind: KindReset, Source: Upstream, Retryable: true, Err: err}
}
