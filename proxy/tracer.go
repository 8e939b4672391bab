package proxy

import (
	"fmt"
	"time"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The tracer seam: a connection manager's tracing.provider is a Tracer,
// an extension of kind config.Tracer (tracing/NAME), built by its
// TracerFactory. The connection manager decides whether a request is
// traced (tracing.go); a traced request gets a span from the tracer,
// which takes the trace context from the request's headers and puts its
// own in them for the upstream, and the span is finished, with what the
// request became, when the stream ends. As in Envoy, every request of a
// connection manager with a tracer reaches it: an incoming context's
// sampling flag overrides the connection manager's decision, and a
// request that is not sampled still carries the tracer's context (marked
// not sampled) upstream. Connection managers without tracing never touch
// the seam.

// Tracer makes spans.
type Tracer interface {
	// Start begins the span of a request that arrived at start,
	// continuing the trace context in h (a new trace without one), and
	// sets h's trace context to the span's for the upstream. traced is
	// the connection manager's decision; a sampling flag in h's context
	// overrides it. nil: the span is not sampled (h then carries a
	// context that says so, or is left as it was when its context is
	// one the tracer cannot continue). egress: the request leaves
	// through an OUTBOUND listener without upstream spans of its own, so
	// its span is the CLIENT side of the call ("egress"); otherwise it is
	// the SERVER side ("ingress").
	Start(h *protocol.Headers, start time.Time, egress, traced bool) Span
}

// Span is a traced request's span.
type Span interface {
	// Finish ends the span; e is valid only during the call.
	Finish(e *SpanEnd)
	// Child begins a CLIENT span under this one for an upstream request
	// (spawn_upstream_span) and sets h's trace context to it.
	Child(h *protocol.Headers, start time.Time) Span
}

// SpanEnd is what a request became, for its span's tags.
type SpanEnd struct {
	End time.Time
	// Operation is the route's decorator operation, else "".
	Operation string
	Request   *protocol.Headers
	// Response is nil when no response was started.
	Response     *protocol.Headers
	Status       int
	Flags        accesslog.Flags
	Protocol     string
	Cluster      string // the upstream cluster's stat name, "" when none
	ClusterName  string // its name (Cluster differs with alt_stat_name)
	UpstreamHost string
	Peer         string // the downstream's address
	// Trailers are the response's trailers, nil when it had none.
	Trailers *protocol.Headers
	// Outbound: the listener's traffic_direction is OUTBOUND; Host is
	// then the request's host when its span began ("egress HOST").
	Outbound bool
	Host     string
	// Local is the tracing block the span belongs to (its node, zone and
	// max_path_tag_length); nil reads as none and 256.
	Local           *Tracing
	BytesReceived   uint64
	BytesSent       uint64
	ResponseDetails string
	// Tags are the connection manager's custom_tags, resolved for this
	// request (name, value).
	Tags [][2]string
}

// Name is a span's name, as Envoy's tracers name it, and whether it is
// the CLIENT side: an upstream request's span (upstream) is "router
// <cluster> egress"; else the route's decorator operation, or "egress
// HOST" on an OUTBOUND listener, "ingress" otherwise. client is the
// tracer's kind for the request's own span.
func (e *SpanEnd) Name(upstream, client bool) (name string, isClient bool) {
	switch {
	case upstream:
		return "router " + e.Cluster + " egress", true
	case e.Operation != "":
		return e.Operation, client
	case e.Outbound:
		return "egress " + e.Host, client
	}
	return "ingress", client
}

// CustomTag is one of the tracing block's custom_tags: a literal value
// (Value; an environment variable's is read when the config is built),
// a request header's (Header), or a value of the request's dynamic
// metadata (MetaNS, MetaKey), with Default when it is absent.
type CustomTag struct {
	Name, Value, Header, Default string
	MetaNS, MetaKey              string
}

// TracerFactory builds a tracer from its provider's typed_config.
type TracerFactory func(bc *filter.BuildContext, cfg *anypb.Any) (Tracer, error)

// DecodeTracer unmarshals a tracer's typed_config into m and checks it:
// its validation rules, then sup, the fields the tracer implements.
func DecodeTracer(tc *anypb.Any, m interface {
	proto.Message
	ValidateAll() error
}, sup config.Support) error {
	if err := tc.UnmarshalTo(m); err != nil {
		return err
	}
	if errs := config.ValidationErrors(m.ValidateAll()); len(errs) > 0 {
		return config.Join(errs)
	}
	return sup.Check(m)
}

// CollectorCluster checks that a tracer may send its spans to cluster: a
// cluster the config has, or any while clusters come by CDS (it is
// looked up as spans are sent).
func CollectorCluster(bc *filter.BuildContext, cluster string) error {
	if bc.Clusters == nil {
		return fmt.Errorf("no clusters to send spans to")
	}
	if !bc.Clusters.Known(cluster) && !bc.Clusters.Dynamic() {
		return fmt.Errorf("cluster %q is not configured", cluster)
	}
	return nil
}

// TracerStats is the scope of a tracer's stats: tracing.<name>.
func TracerStats(bc *filter.BuildContext, name string) *stats.Scope {
	sc := bc.Stats
	if sc == nil {
		sc = stats.NewStore().Root()
	}
	return sc.Scope("tracing", "", "").Scope(name, "", "")
}

// startUpstreamSpan begins an upstream attempt's span when the
// connection manager spawns upstream spans.
func (s *Stream) startUpstreamSpan() {
	if s.span == nil || !s.cfg.Tracing.SpawnUpstream && !s.cfg.Tracing.ChildSpans {
		return
	}
	if s.upSpan != nil { // an attempt that was given up without dropAttempt
		s.endUpstreamSpan(true)
	}
	s.upSpan = s.span.Child(s.req, time.Now())
}

// endUpstreamSpan ends a dropped attempt's span (before a retry) with
// the status its host answered (0 when it failed) and its host.
func (s *Stream) endUpstreamSpan(failed bool) {
	st := 0
	if !failed {
		st = s.resp.StatusCode()
	}
	host := s.info.UpstreamHost
	if s.host != nil {
		host = s.host.Addr
	}
	e := s.spanEnd(time.Now(), st, host)
	e.Flags = s.flags
	if !failed {
		e.Response = &s.resp
	}
	s.upSpan.Finish(e)
	s.upSpan = nil
}

// spanEnd is the SpanEnd both of a request's spans share: what the
// request became, its cluster, its custom tags.
func (s *Stream) spanEnd(now time.Time, status int, host string) *SpanEnd {
	e := &SpanEnd{End: now, Request: s.req, Status: status, Flags: s.info.ResponseFlags, Protocol: s.info.Protocol,
		Cluster: s.info.ClusterName, ClusterName: s.info.ClusterName, UpstreamHost: host, Local: s.cfg.Tracing}
	if s.cluster != nil {
		e.Cluster, e.ClusterName = s.cluster.StatName, s.cluster.Name
	}
	if s.hasTrailers {
		e.Trailers = &s.trailers
	}
	for _, t := range s.cfg.Tracing.Tags {
		v := t.Value
		switch {
		case t.Header != "":
			if hv, ok := s.req.Get(t.Header); ok {
				v = string(hv)
			} else {
				v = t.Default
			}
		case t.MetaNS != "":
			if mv, ok := s.info.Metadata[t.MetaNS][t.MetaKey]; ok {
				v = mv
			} else {
				v = t.Default
			}
		}
		if v != "" {
			e.Tags = append(e.Tags, [2]string{t.Name, v})
		}
	}
	return e
}

// finishSpan ends the request's span (and its last upstream span).
func (s *Stream) finishSpan(now time.Time) {
	if s.upSpan != nil {
		st := 0
		if s.respStarted {
			st = s.status
		}
		e := s.spanEnd(now, st, s.info.UpstreamHost)
		if s.respStarted {
			e.Response = &s.resp
		}
		s.upSpan.Finish(e)
		s.upSpan = nil
	}
	e := s.spanEnd(now, s.status, s.info.UpstreamHost)
	e.BytesReceived, e.BytesSent, e.ResponseDetails = s.info.BytesReceived, s.info.BytesSent, s.details
	e.Outbound, e.Host = s.cfg.Tracing.Outbound, s.spanHost
	if s.route != nil {
		e.Operation = s.route.Decorator
	}
	if s.respStarted {
		e.Response = &s.resp
	}
	if a := s.cm.conn.RemoteAddr(); a != nil {
		e.Peer = a.String()
	}
	s.span.Finish(e)
	s.span = nil
}
