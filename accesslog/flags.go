package accesslog

import "strings"

// Flags are Envoy's response flags of a stream or connection, one bit each
// (%RESPONSE_FLAGS%, response_flag_filter).
type Flags uint64

// The flags, in Envoy's order: %RESPONSE_FLAGS% lists the set ones in this
// order, joined by commas.
const (
	FailedLocalHealthCheck Flags = 1 << iota
	NoHealthyUpstream
	UpstreamRequestTimeout
	LocalReset
	UpstreamRemoteReset
	UpstreamConnectionFailure
	UpstreamConnectionTermination
	UpstreamOverflow
	NoRouteFound
	DelayInjected
	FaultInjected
	RateLimited
	UnauthorizedExternalService
	RateLimitServiceError
	DownstreamConnectionTermination
	UpstreamRetryLimitExceeded
	StreamIdleTimeout
	InvalidEnvoyRequestHeaders
	DownstreamProtocolError
	UpstreamMaxStreamDurationReached
	ResponseFromCacheFilter
	NoFilterConfigFound
	DurationTimeout
	UpstreamProtocolError
	NoClusterFound
	OverloadManager
	DNSResolutionFailed
	DropOverload
	DownstreamRemoteReset
	UnconditionalDropOverload
	numFlags = iota
)

// flagNames are each flag's short and long names, in bit order.
var flagNames = [numFlags][2]string{
	{"LH", "FailedLocalHealthCheck"},
	{"UH", "NoHealthyUpstream"},
	{"UT", "UpstreamRequestTimeout"},
	{"LR", "LocalReset"},
	{"UR", "UpstreamRemoteReset"},
	{"UF", "UpstreamConnectionFailure"},
	{"UC", "UpstreamConnectionTermination"},
	{"UO", "UpstreamOverflow"},
	{"NR", "NoRouteFound"},
	{"DI", "DelayInjected"},
	{"FI", "FaultInjected"},
	{"RL", "RateLimited"},
	{"UAEX", "UnauthorizedExternalService"},
	{"RLSE", "RateLimitServiceError"},
	{"DC", "DownstreamConnectionTermination"},
	{"URX", "UpstreamRetryLimitExceeded"},
	{"SI", "StreamIdleTimeout"},
	{"IH", "InvalidEnvoyRequestHeaders"},
	{"DPE", "DownstreamProtocolError"},
	{"UMSDR", "UpstreamMaxStreamDurationReached"},
	{"RFCF", "ResponseFromCacheFilter"},
	{"NFCF", "NoFilterConfigFound"},
	{"DT", "DurationTimeout"},
	{"UPE", "UpstreamProtocolError"},
	{"NC", "NoClusterFound"},
	{"OM", "OverloadManager"},
	{"DF", "DnsResolutionFailed"},
	{"DO", "DropOverload"},
	{"DR", "DownstreamRemoteReset"},
	{"UDO", "UnconditionalDropOverload"},
}

// ParseFlag returns the flag of a short name ("UH"); ok is false for a
// name Envoy does not have.
func ParseFlag(short string) (Flags, bool) {
	for i, n := range flagNames {
		if n[0] == short {
			return 1 << i, true
		}
	}
	return 0, false
}

// AppendShort appends the set flags' short names, comma-separated
// ("UF,URX"); nothing when none is set.
func (f Flags) AppendShort(b []byte) []byte { return f.appendNames(b, 0) }

// AppendLong appends the set flags' long names, comma-separated.
func (f Flags) AppendLong(b []byte) []byte { return f.appendNames(b, 1) }

func (f Flags) appendNames(b []byte, form int) []byte {
	first := true
	for i := 0; f != 0 && i < numFlags; i++ {
		if f&(1<<i) == 0 {
			continue
		}
		f &^= 1 << i
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, flagNames[i][form]...)
	}
	return b
}

// String is the short form ("" for none).
func (f Flags) String() string { return string(f.AppendShort(nil)) }

// FlagNames lists every short name, for error messages.
func FlagNames() string {
	var sb strings.Builder
	for i, n := range flagNames {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(n[0])
	}
	return sb.String()
}
