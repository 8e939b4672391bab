package router

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseRetryOn(t *testing.T) {
	cases := []struct {
		name, in string
		want     RetryOn
		err      string
	}{
		{"empty", "", 0, ""},
		{"one", "5xx", Retry5xx, ""},
		{"spaces and empty items", " reset ,, connect-failure ", RetryReset | RetryConnectFailure, ""},
		{"grpc", "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable",
			RetryGRPCCancelled | RetryGRPCDeadlineExceeded | RetryGRPCInternal | RetryGRPCResourceExhausted | RetryGRPCUnavailable, ""},
		{"unknown named", "5xx,5XX,bogus", 0, `unknown retry condition "5XX", "bogus"`},
		{"known but unsupported", "retriable-headers", 0, `retry condition "retriable-headers": not supported yet`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRetryOn(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func TestRetryOnString(t *testing.T) {
	on := Retry5xx | RetryReset | RetryGRPCUnavailable
	if got := on.String(); got != "5xx,reset,unavailable" {
		t.Errorf("String = %q", got)
	}
	if !on.Has(Retry5xx|RetryReset) || on.Has(RetryRefusedStream) {
		t.Errorf("Has is wrong for %v", on)
	}
}

func TestShouldRetryStatus(t *testing.T) {
	cases := []struct {
		name  string
		on    RetryOn
		codes []uint32
		yes   []int
		no    []int
	}{
		{"5xx", Retry5xx, nil, []int{500, 503, 599}, []int{200, 404, 409, 600}},
		{"gateway-error", RetryGatewayError, nil, []int{502, 503, 504}, []int{500, 501, 505}},
		{"retriable-4xx", RetryRetriable4xx, nil, []int{409}, []int{400, 404, 500}},
		{"retriable-status-codes", RetryRetriableStatusCodes, []uint32{418, 500}, []int{418, 500}, []int{503}},
		{"codes without the condition", RetryReset, []uint32{418}, nil, []int{418, 503}},
		{"combined", RetryGatewayError | RetryRetriableStatusCodes, []uint32{429}, []int{429, 502}, []int{500}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &RetryPolicy{On: tc.on, RetriableStatusCodes: tc.codes}
			for _, c := range tc.yes {
				if !p.ShouldRetryStatus(c) {
					t.Errorf("%d not retried", c)
				}
			}
			for _, c := range tc.no {
				if p.ShouldRetryStatus(c) {
					t.Errorf("%d retried", c)
				}
			}
		})
	}
}

func TestRetryPolicyCompile(t *testing.T) {
	tbl := mustCompile(t, vh(`
  - name: defaults
    match: {prefix: "/defaults"}
    route: {cluster: a, retry_policy: {retry_on: "5xx"}}
  - name: base
    match: {prefix: "/base"}
    route: {cluster: a, retry_policy: {retry_on: "reset", retry_back_off: {base_interval: 0.1s}}}
  - name: full
    match: {prefix: "/full"}
    route:
      cluster: a
      retry_policy:
        retry_on: retriable-status-codes
        num_retries: 0
        per_try_timeout: 2s
        per_try_idle_timeout: 1s
        retriable_status_codes: [418, 503]
        retry_back_off: {base_interval: 0.05s, max_interval: 0.2s}
`), Options{})
	cases := []struct {
		path string
		want RetryPolicy
	}{
		{"/defaults", RetryPolicy{On: Retry5xx, NumRetries: 1, BackOffBase: 25 * time.Millisecond, BackOffMax: 250 * time.Millisecond, HostSelectionAttempts: 1}},
		{"/base", RetryPolicy{On: RetryReset, NumRetries: 1, BackOffBase: 100 * time.Millisecond, BackOffMax: time.Second, HostSelectionAttempts: 1}},
		{"/full", RetryPolicy{On: RetryRetriableStatusCodes, NumRetries: 0, PerTryTimeout: 2 * time.Second,
			PerTryIdleTimeout: time.Second, RetriableStatusCodes: []uint32{418, 503},
			BackOffBase: 50 * time.Millisecond, BackOffMax: 200 * time.Millisecond, HostSelectionAttempts: 1}},
	}
	for _, tc := range cases {
		got := tbl.Match(request("x", tc.path)).Retry
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("%s: got %+v\nwant %+v", tc.path, *got, tc.want)
		}
	}
}
