package proxy

import (
	"cmp"
	"strconv"
	"strings"

	"github.com/straitproxy/strait/protocol"
)

// DefaultMaxPathTagLength is how much of a path http.url keeps when the
// tracing block sets no max_path_tag_length (Envoy's default).
const DefaultMaxPathTagLength = 256

// EnvoyTags calls add with the tags Envoy puts on a span. A request's own
// span (upstream false) gets the request's (guid:x-request-id, http.url,
// http.method, downstream_cluster, user_agent, guid:x-client-trace-id,
// and grpc.path, grpc.authority, grpc.content_type, grpc.timeout for a
// gRPC request), the downstream peer's address, request_size and
// response_size, and the local node_id and zone; an upstream attempt's
// span gets its host as peer.address. Both get component,
// http.protocol, upstream_cluster (the name) and upstream_cluster.name
// (the stat name) once a cluster was chosen, upstream_address,
// http.status_code, response_flags, grpc.status_code and grpc.message
// from the response's headers or trailers, and error "true" for no
// answer, a 5xx, or a gRPC status that is the server's fault. The
// tracer adds the custom tags (e.Tags) after these.
func (e *SpanEnd) EnvoyTags(upstream bool, add func(k, v string)) {
	add("component", "proxy")
	if !upstream {
		e.requestTags(add)
		add("request_size", strconv.FormatUint(e.BytesReceived, 10))
		add("response_size", strconv.FormatUint(e.BytesSent, 10))
		var node, zone string
		if e.Local != nil {
			node, zone = e.Local.NodeID, e.Local.Zone
		}
		add("node_id", node)
		add("zone", zone)
	} else if e.UpstreamHost != "" {
		add("peer.address", e.UpstreamHost)
	}
	add("http.protocol", e.Protocol)
	if e.Cluster != "" {
		add("upstream_cluster", cmp.Or(e.ClusterName, e.Cluster))
		add("upstream_cluster.name", e.Cluster)
	}
	if e.UpstreamHost != "" {
		add("upstream_address", e.UpstreamHost)
	}
	add("http.status_code", strconv.Itoa(e.Status))
	flags := e.Flags.String()
	if flags == "" {
		flags = "-"
	}
	add("response_flags", flags)
	failed := e.Status == 0 || e.Status >= 500
	// The trailers' gRPC status, else the headers' (a trailers-only
	// answer).
	var status, msg []byte
	var hasStatus, hasMsg bool
	for _, h := range [...]*protocol.Headers{e.Response, e.Trailers} {
		if h == nil {
			continue
		}
		if v, ok := h.Get("grpc-status"); ok {
			status, hasStatus = v, true
		}
		if v, ok := h.Get("grpc-message"); ok {
			msg, hasMsg = v, true
		}
	}
	if hasStatus {
		add("grpc.status_code", string(status))
		failed = failed || grpcServerFault(string(status))
	}
	if hasMsg {
		add("grpc.message", string(msg))
	}
	if failed {
		add("error", "true")
	}
}

// requestTags are the request's own tags (a request span's).
func (e *SpanEnd) requestTags(add func(k, v string)) {
	if e.Peer != "" {
		add("peer.address", e.Peer)
	}
	h := e.Request
	if h == nil {
		return
	}
	get := func(name string) (string, bool) {
		v, ok := h.Get(name)
		return string(v), ok
	}
	if v, ok := get("x-request-id"); ok {
		add("guid:x-request-id", v)
	}
	add("http.url", e.url(h))
	m, _ := get(protocol.Method)
	add("http.method", m)
	for _, kv := range [...][2]string{{"downstream_cluster", "x-envoy-downstream-service-cluster"}, {"user_agent", "user-agent"}} {
		v, ok := get(kv[1])
		if !ok {
			v = "-"
		}
		add(kv[0], v)
	}
	if v, ok := get(clientTraceID); ok {
		add("guid:x-client-trace-id", v)
	}
	if ct, _ := get("content-type"); strings.HasPrefix(ct, "application/grpc") {
		add("grpc.path", string(h.Path()))
		add("grpc.authority", string(h.Host()))
		add("grpc.content_type", ct)
		if v, ok := get("grpc-timeout"); ok {
			add("grpc.timeout", v)
		}
	}
}

// url is http.url as Envoy builds it: the forwarded scheme (the
// request's own without x-forwarded-proto), the host, and the path the
// client sent (x-envoy-original-path when a route rewrote it) cut to
// max_path_tag_length.
func (e *SpanEnd) url(h *protocol.Headers) string {
	sch, ok := h.Get("x-forwarded-proto")
	if !ok {
		sch, _ = h.Get(protocol.Scheme)
	}
	path, ok := h.Get("x-envoy-original-path")
	if !ok {
		path = h.Path()
	}
	limit := DefaultMaxPathTagLength
	if e.Local != nil && e.Local.MaxPathTagLength > 0 {
		limit = e.Local.MaxPathTagLength
	}
	if len(path) > limit {
		path = path[:limit]
	}
	return string(sch) + "://" + string(h.Host()) + string(path)
}

// grpcServerFault reports whether a grpc-status is the server's fault
// (Unknown, DeadlineExceeded, ResourceExhausted, Internal, Unimplemented,
// Unavailable, DataLoss), which Envoy tags as an error; the others are
// the client's.
func grpcServerFault(status string) bool {
	switch status {
	case "2", "4", "8", "12", "13", "14", "15":
		return true
	}
	return false
}
