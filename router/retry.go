package router

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"github.com/straitproxy/strait/config"
)

// RetryOn is a set of retry conditions, the retry_on field of a retry policy.
type RetryOn uint32

// Retry conditions. The HTTP ones follow Envoy's x-envoy-retry-on; the gRPC
// ones (x-envoy-retry-grpc-on) are parsed and kept for later use.
const (
	// Retry5xx retries any 5xx response, and also a connect failure, a reset
	// or a refused stream (no response at all), as Envoy does.
	Retry5xx RetryOn = 1 << iota
	// RetryGatewayError retries 502, 503 and 504, and a connect failure.
	RetryGatewayError
	// RetryConnectFailure retries when the upstream connection fails.
	RetryConnectFailure
	// RetryReset retries when the upstream resets the stream or does not
	// answer in time (disconnect, reset, read timeout).
	RetryReset
	// RetryRetriableStatusCodes retries the codes in RetriableStatusCodes.
	RetryRetriableStatusCodes
	// RetryRefusedStream retries an HTTP/2 REFUSED_STREAM reset.
	RetryRefusedStream
	// RetryRetriable4xx retries a 409 response.
	RetryRetriable4xx
	// RetryGRPCCancelled retries gRPC status CANCELLED.
	RetryGRPCCancelled
	// RetryGRPCDeadlineExceeded retries gRPC status DEADLINE_EXCEEDED.
	RetryGRPCDeadlineExceeded
	// RetryGRPCInternal retries gRPC status INTERNAL.
	RetryGRPCInternal
	// RetryGRPCResourceExhausted retries gRPC status RESOURCE_EXHAUSTED.
	RetryGRPCResourceExhausted
	// RetryGRPCUnavailable retries gRPC status UNAVAILABLE.
	RetryGRPCUnavailable
	// RetryResetBeforeRequest retries a connect failure or reset that
	// came before the request was sent upstream (reset-before-request).
	RetryResetBeforeRequest
)

// retryTokens is the retry_on vocabulary, in the order String prints it.
var retryTokens = []struct {
	name string
	flag RetryOn
}{
	{"5xx", Retry5xx},
	{"gateway-error", RetryGatewayError},
	{"connect-failure", RetryConnectFailure},
	{"reset", RetryReset},
	{"retriable-status-codes", RetryRetriableStatusCodes},
	{"refused-stream", RetryRefusedStream},
	{"retriable-4xx", RetryRetriable4xx},
	{"cancelled", RetryGRPCCancelled},
	{"deadline-exceeded", RetryGRPCDeadlineExceeded},
	{"internal", RetryGRPCInternal},
	{"resource-exhausted", RetryGRPCResourceExhausted},
	{"unavailable", RetryGRPCUnavailable},
	{"reset-before-request", RetryResetBeforeRequest},
}

// unsupportedRetryTokens are Envoy conditions we know but do not implement.
var unsupportedRetryTokens = []string{
	"envoy-ratelimited", "retriable-headers",
	"http3-post-connect-failure",
}

// Has reports whether every condition in f is in o.
func (o RetryOn) Has(f RetryOn) bool { return o&f == f }

// String returns the conditions as a retry_on list, e.g. "5xx,reset".
func (o RetryOn) String() string {
	var names []string
	for _, t := range retryTokens {
		if o&t.flag != 0 {
			names = append(names, t.name)
		}
	}
	return strings.Join(names, ",")
}

// Defaults Envoy applies to an unset retry policy field.
const (
	defaultNumRetries  = 1
	defaultBackOffBase = 25 * time.Millisecond
)

// RetryPolicy is a compiled retry_policy. It is shared by all streams and
// must not be modified.
type RetryPolicy struct {
	// On is the set of conditions that allow a retry (retry_on).
	On RetryOn
	// NumRetries is the most retries per request; 1 when num_retries is
	// unset, as in Envoy.
	NumRetries uint32
	// PerTryTimeout bounds each attempt; 0 means only the route timeout.
	PerTryTimeout time.Duration
	// PerTryIdleTimeout bounds the silence within an attempt; 0 means none.
	PerTryIdleTimeout time.Duration
	// RetriableStatusCodes are retried when On has
	// RetryRetriableStatusCodes. Read-only.
	RetriableStatusCodes []uint32
	// BackOffBase is the base back-off interval: 25ms unless retry_back_off
	// sets base_interval.
	BackOffBase time.Duration
	// BackOffMax caps the back-off: 10 × BackOffBase unless max_interval
	// is set.
	BackOffMax time.Duration
	// AvoidTried is the previous_hosts retry host predicate: a retry's
	// host choice is made again, up to HostSelectionAttempts times
	// (host_selection_retry_max_attempts, default 1), while it falls on
	// a host this request tried; then the last choice stands.
	AvoidTried            bool
	HostSelectionAttempts int
}

// ShouldRetryStatus reports whether a response with this status code may be
// retried under p's conditions. Resets and connect failures are the
// caller's to classify with On.
func (p *RetryPolicy) ShouldRetryStatus(code int) bool {
	switch {
	case p.On&Retry5xx != 0 && code >= 500 && code <= 599:
		return true
	case p.On&RetryGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case p.On&RetryRetriable4xx != 0 && code == 409:
		return true
	case p.On&RetryRetriableStatusCodes != 0:
		return slices.Contains(p.RetriableStatusCodes, uint32(code))
	}
	return false
}

func compileRetry(cfg *routev3.RetryPolicy, path string) (*RetryPolicy, error) {
	on, err := parseRetryOn(cfg.GetRetryOn())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", joinPath(path, "retry_on"), err)
	}
	p := &RetryPolicy{
		On:                   on,
		NumRetries:           defaultNumRetries,
		RetriableStatusCodes: slices.Clone(cfg.GetRetriableStatusCodes()),
		BackOffBase:          defaultBackOffBase,
	}
	if n := cfg.GetNumRetries(); n != nil {
		p.NumRetries = n.GetValue()
	}
	if p.PerTryTimeout, err = optDuration(cfg.GetPerTryTimeout(), joinPath(path, "per_try_timeout")); err != nil {
		return nil, err
	}
	if p.PerTryIdleTimeout, err = optDuration(cfg.GetPerTryIdleTimeout(), joinPath(path, "per_try_idle_timeout")); err != nil {
		return nil, err
	}
	if err := p.setBackOff(cfg.GetRetryBackOff(), joinPath(path, "retry_back_off")); err != nil {
		return nil, err
	}
	if err := p.setHostPredicates(cfg, path); err != nil {
		return nil, err
	}
	return p, nil
}

// previousHostsType is the one retry host predicate compiled in.
var previousHostsType = string((&previoushostsv3.PreviousHostsPredicate{}).ProtoReflect().Descriptor().FullName())

func (p *RetryPolicy) setHostPredicates(cfg *routev3.RetryPolicy, path string) error {
	for i, pred := range cfg.GetRetryHostPredicate() {
		ppath := indexPath(path, "retry_host_predicate", i)
		tc := pred.GetTypedConfig()
		if tc == nil {
			return config.At(joinPath(ppath, "typed_config"), errors.New("required"))
		}
		if name := string(tc.MessageName()); name != previousHostsType {
			return config.At(joinPath(ppath, "typed_config"), fmt.Errorf("retry host predicate %s is not supported (only %s)", name, previousHostsType))
		}
		p.AvoidTried = true
	}
	p.HostSelectionAttempts = 1
	if n := cfg.GetHostSelectionRetryMaxAttempts(); n != 0 {
		if n < 0 {
			return config.At(joinPath(path, "host_selection_retry_max_attempts"), errors.New("must not be negative"))
		}
		p.HostSelectionAttempts = int(min(n, 10000)) // each is one pick
	}
	return nil
}

func (p *RetryPolicy) setBackOff(b *routev3.RetryPolicy_RetryBackOff, path string) error {
	var err error
	if b.GetBaseInterval() != nil {
		if p.BackOffBase, err = optDuration(b.GetBaseInterval(), joinPath(path, "base_interval")); err != nil {
			return err
		}
	}
	p.BackOffMax = 10 * p.BackOffBase
	if b.GetMaxInterval() == nil {
		return nil
	}
	if p.BackOffMax, err = optDuration(b.GetMaxInterval(), joinPath(path, "max_interval")); err != nil {
		return err
	}
	if p.BackOffMax < p.BackOffBase {
		return fmt.Errorf("%s: must be at least base_interval %v, got %v",
			joinPath(path, "max_interval"), p.BackOffBase, p.BackOffMax)
	}
	return nil
}

// parseRetryOn parses a comma-separated retry_on list. Empty items are
// skipped and items are trimmed, as Envoy does.
func parseRetryOn(s string) (RetryOn, error) {
	var on RetryOn
	var unknown, unsupported []string
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		flag := retryFlag(item)
		switch {
		case flag != 0:
			on |= flag
		case slices.Contains(unsupportedRetryTokens, item):
			unsupported = append(unsupported, fmt.Sprintf("%q", item))
		default:
			unknown = append(unknown, fmt.Sprintf("%q", item))
		}
	}
	if len(unknown) > 0 {
		return 0, fmt.Errorf("unknown retry condition %s", strings.Join(unknown, ", "))
	}
	if len(unsupported) > 0 {
		return 0, fmt.Errorf("retry condition %s: not supported yet", strings.Join(unsupported, ", "))
	}
	return on, nil
}

func retryFlag(name string) RetryOn {
	for _, t := range retryTokens {
		if t.name == name {
			return t.flag
		}
	}
	return 0
}
