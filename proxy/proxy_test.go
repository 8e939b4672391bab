package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/upstream"
)

// TestClassifyAndReply: each data-plane error maps to one kind, and each
// kind to Envoy's reply and response flag.
func TestClassifyAndReply(t *testing.T) {
	cases := []struct {
		err    error
		kind   Kind
		status int
		flag   string
	}{
		{&upstream.ConnectError{Addr: "a", Err: errors.New("refused")}, KindConnectFailure, 503, "UF"},
		{upstream.ErrPendingOverflow, KindOverflow, 503, "UO"},
		{upstream.ErrPendingTimeout, KindTimeout, 504, "UT"},
		{context.Canceled, KindDownstreamReset, 499, "DC"},
		{protocol.ErrDownstreamReset, KindDownstreamReset, 499, "DC"},
		{&protocol.MalformedError{Reason: "x"}, KindMalformed, 502, "UPE"},
		{os.ErrDeadlineExceeded, KindTimeout, 504, "UT"},
		{protocol.ErrUpstreamResetBeforeResponse, KindResetBeforeHeaders, 503, "UC"},
		{errors.New("anything else"), KindReset, 503, "UC"},
		{fmt.Errorf("wrapped: %w", protocol.ErrDownstreamReset), KindDownstreamReset, 499, "DC"},
	}
	for _, c := range cases {
		e := classify(c.err, false)
		if e.Kind != c.kind {
			t.Errorf("%v: kind %d, want %d", c.err, e.Kind, c.kind)
		}
		if r := replyFor(e); r.status != c.status || r.flag.String() != c.flag {
			t.Errorf("%v: reply %d %s, want %d %s", c.err, r.status, r.flag, c.status, c.flag)
		}
	}
	if e := classify(os.ErrDeadlineExceeded, true); e.Kind != KindPerTryTimeout || !e.Retryable {
		t.Errorf("a per-try deadline: %+v", e)
	}
}

// TestRetryOnError: retry_on conditions against error kinds.
func TestRetryOnError(t *testing.T) {
	p := &router.RetryPolicy{On: router.RetryConnectFailure}
	if !retryOnError(p, &Error{Kind: KindConnectFailure, Retryable: true}, false) {
		t.Error("connect-failure does not retry a connect failure")
	}
	if retryOnError(p, &Error{Kind: KindReset, Retryable: true}, true) {
		t.Error("connect-failure retries a reset")
	}
	if retryOnError(&router.RetryPolicy{On: router.Retry5xx}, &Error{Kind: KindTimeout}, false) {
		t.Error("a route timeout is retried")
	}
	// reset-before-request: failures before the request went out only.
	rbr := &router.RetryPolicy{On: router.RetryResetBeforeRequest}
	for _, k := range []Kind{KindConnectFailure, KindResetBeforeHeaders, KindReset} {
		if !retryOnError(rbr, &Error{Kind: k, Retryable: true}, false) {
			t.Errorf("reset-before-request does not retry %v before the request was sent", k)
		}
		if retryOnError(rbr, &Error{Kind: k, Retryable: true}, true) {
			t.Errorf("reset-before-request retries %v after the request was sent", k)
		}
	}
	if retryOnError(rbr, &Error{Kind: KindPerTryTimeout, Retryable: true}, false) {
		t.Error("reset-before-request retries a timeout")
	}
}

// TestOnDemandHost: hosts that may name a VHDS resource, lowercased.
func TestOnDemandHost(t *testing.T) {
	for in, want := range map[string]string{"A.Example:8080": "a.example:8080", "[::1]:80": "[::1]:80", "x/y": "", "a b": "", "": "", "u@h": ""} {
		got, ok := onDemandHost([]byte(in))
		if ok != (want != "") || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, ok, want)
		}
	}
}

// TestConnectionListedFields: the fields a Connection header names go,
// its own tokens and pseudo-headers and Host stay.
func TestConnectionListedFields(t *testing.T) {
	var h protocol.Headers
	h.Set(protocol.Authority, "a")
	h.Set("connection", "X-Secret, close, Keep-Alive, host, :authority")
	h.Set("x-secret", "s")
	h.Set("x-other", "o")
	h.Set("host", "a")
	s := &Stream{}
	s.removeConnectionListed(&h)
	if h.Has("x-secret") || !h.Has("x-other") || !h.Has("host") || !h.Has(protocol.Authority) {
		var names []string
		h.Visit(func(n, _ []byte) bool { names = append(names, string(n)); return true })
		t.Fatalf("left %v", names)
	}
}

// TestIdempotent: what may be sent again after a dead pooled connection.
func TestIdempotent(t *testing.T) {
	for method, want := range map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true, "TRACE": true, "POST": false, "PUT": false, "DELETE": false, "PATCH": false} {
		var h protocol.Headers
		h.Set(protocol.Method, method)
		if got := (&Stream{req: &h}).idempotent(); got != want {
			t.Errorf("%s: %v", method, got)
		}
	}
	var h protocol.Headers
	h.Set(protocol.Method, "POST")
	h.Set("idempotency-key", "k")
	if !(&Stream{req: &h}).idempotent() {
		t.Error("a POST with an Idempotency-Key")
	}
}
