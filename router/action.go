package router

import (
	"fmt"
	"regexp"
	"time"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// DefaultTimeout is the route timeout when route.timeout is unset, as in
// Envoy.
const DefaultTimeout = 15 * time.Second

// IdleTimeoutDisabled is Route.IdleTimeout when the route sets idle_timeout
// to 0, which turns the stream idle timeout off for that route.
const IdleTimeoutDisabled time.Duration = -1

// Route is a compiled route. It is shared by all streams and must not be
// modified; slices and maps reachable from it are read-only too.
type Route struct {
	// Name is the route's name, possibly empty.
	Name string
	// VirtualHost is the virtual host the route belongs to.
	VirtualHost *VirtualHost

	// Decorator is decorator.operation: a traced request's span name.
	Decorator string

	// The action: exactly one of Cluster, Weighted, DirectResponse and
	// Redirect is set.
	Cluster        string
	Weighted       []WeightedCluster
	DirectResponse *DirectResponse
	Redirect       *Redirect

	// ClusterNotFoundStatus answers a request whose cluster does not exist:
	// 503 (the default), 404 or 500.
	ClusterNotFoundStatus int
	// AutoHostRewrite asks the proxy to set :authority to the chosen
	// upstream host's hostname.
	AutoHostRewrite bool
	// AppendXForwardedHost asks the proxy to record the original host in
	// x-forwarded-host when it rewrites :authority.
	AppendXForwardedHost bool
	// Timeout bounds the whole upstream exchange: DefaultTimeout when
	// route.timeout is unset, and 0 (no timeout) when it is set to 0.
	Timeout time.Duration
	// IdleTimeout overrides the stream idle timeout: 0 when unset,
	// IdleTimeoutDisabled when set to 0.
	IdleTimeout time.Duration
	// GRPCTimeout, when set, makes a gRPC request's grpc-timeout header
	// its timeout instead of Timeout (max_grpc_timeout).
	GRPCTimeout *GRPCTimeout
	// MaxStream is max_stream_duration: the stream's whole life, from its
	// start, is bounded (nil: no bound).
	MaxStream *MaxStreamDuration
	// Retry is the route's retry policy, else its virtual host's, else nil.
	Retry *RetryPolicy
	// PerFilterConfig is typed_per_filter_config of the route
	// configuration, the virtual host and the route merged by filter name
	// (the most specific wins), decoded and validated. The values are
	// opaque to this package: each is the per-route config type its
	// filter registered (config.HTTPPerRoute).
	PerFilterConfig map[string]any
	// Mirrors are the request_mirror_policies in effect: the route's,
	// else its virtual host's, else the route configuration's (only
	// routes to a cluster mirror).
	Mirrors []*MirrorPolicy

	match        routeMatch
	rewrite      pathRewrite
	hostRewrite  string
	hasHost      bool
	cumWeights   []uint64 // running sums of Weighted[i].Weight
	headerLevels levels
}

// WeightedCluster is one cluster of a weighted_clusters action.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// DirectResponse is a direct_response action: answer with Status and Body.
type DirectResponse struct {
	Status int
	Body   []byte // nil when the action has no body; read-only
}

// PickCluster returns the cluster for a request: Cluster for a single
// cluster action, else the weighted cluster that r (any random number) falls
// on in proportion to the weights. It returns "" for other actions.
func (r *Route) PickCluster(rnd uint64) string {
	if len(r.Weighted) == 0 {
		return r.Cluster
	}
	x := rnd % r.cumWeights[len(r.cumWeights)-1]
	lo, hi := 0, len(r.cumWeights)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if x < r.cumWeights[mid] {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return r.Weighted[lo].Name
}

// RewritesPath reports whether the route has a prefix_rewrite or
// regex_rewrite, so that RewritePath would change a path.
func (r *Route) RewritesPath() bool { return r.rewrite.kind != rewriteNone }

// RewritePath appends to dst the :path to send upstream for path, the :path
// the route matched (query included), and returns the extended slice. It
// appends path unchanged when the route rewrites nothing, when path does not
// start with the matched prefix, or when a regex rewrite yields an empty
// path (Envoy's rule). It does not retain path.
func (r *Route) RewritePath(dst []byte, path []byte) []byte {
	return r.rewrite.appendTo(dst, path)
}

// RewriteHost returns host_rewrite_literal and whether it is set.
func (r *Route) RewriteHost() (string, bool) { return r.hostRewrite, r.hasHost }

type rewriteKind uint8

const (
	rewriteNone   rewriteKind = iota
	rewritePrefix             // replace the matched prefix
	rewriteWhole              // replace the path before the query
	rewriteRegex              // substitute every match in the path before the query
)

// pathRewrite is a compiled prefix_rewrite or regex_rewrite.
type pathRewrite struct {
	kind   rewriteKind
	prefix string // rewritePrefix: the matched prefix
	with   string
	re     *regexp.Regexp
	tmpl   []byte // Go Expand template made from the RE2 substitution
}

func (pr *pathRewrite) appendTo(dst, path []byte) []byte {
	switch pr.kind {
	case rewritePrefix:
		if hasPrefix(path, pr.prefix, true) {
			return append(append(dst, pr.with...), path[len(pr.prefix):]...)
		}
	case rewriteWhole:
		return append(append(dst, pr.with...), path[len(pathOnly(path)):]...)
	case rewriteRegex:
		p := pathOnly(path)
		start := len(dst)
		dst = pr.replaceAll(dst, p)
		if len(dst) > start {
			return append(dst, path[len(p):]...)
		}
		dst = dst[:start]
	}
	return append(dst, path...)
}

func (pr *pathRewrite) replaceAll(dst, src []byte) []byte {
	last := 0
	for _, m := range pr.re.FindAllSubmatchIndex(src, -1) {
		dst = append(dst, src[last:m[0]]...)
		dst = pr.re.Expand(dst, pr.tmpl, src, m)
		last = m[1]
	}
	return append(dst, src[last:]...)
}

// compileRewrite builds the path rewrite of a route or redirect action.
// With a prefix or path_separated_prefix match, prefix_rewrite replaces the
// matched prefix; with path and safe_regex matches it replaces the whole
// path before the query, as Envoy does.
func compileRewrite(prefix string, rx *matcherv3.RegexMatchAndSubstitute, m *routeMatch, path string) (pathRewrite, error) {
	switch {
	case prefix != "" && rx != nil:
		return pathRewrite{}, fmt.Errorf("%s: prefix_rewrite and regex_rewrite are exclusive", path)
	case prefix != "" && (m.kind == pathPrefix || m.kind == pathSeparated):
		return pathRewrite{kind: rewritePrefix, prefix: m.value, with: prefix}, nil
	case prefix != "":
		return pathRewrite{kind: rewriteWhole, with: prefix}, nil
	case rx == nil:
		return pathRewrite{}, nil
	}
	p := joinPath(path, "regex_rewrite")
	re, err := regexp.Compile(rx.GetPattern().GetRegex())
	if err != nil {
		return pathRewrite{}, fmt.Errorf("%s.pattern.regex: %w", p, err)
	}
	tmpl, err := expandTemplate(rx.GetSubstitution(), re.NumSubexp())
	if err != nil {
		return pathRewrite{}, fmt.Errorf("%s.substitution: %w", p, err)
	}
	return pathRewrite{kind: rewriteRegex, re: re, tmpl: tmpl}, nil
}

// expandTemplate turns an RE2 substitution ("\1" for group 1, "\0" for the
// whole match, "\\" for a backslash) into a regexp.Expand template.
func expandTemplate(sub string, groups int) ([]byte, error) {
	var out []byte
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		switch {
		case c == '$':
			out = append(out, "$$"...)
		case c != '\\':
			out = append(out, c)
		case i+1 == len(sub):
			return nil, fmt.Errorf(`trailing "\" in %q`, sub)
		case sub[i+1] == '\\':
			out = append(out, '\\')
			i++
		case '0' <= sub[i+1] && sub[i+1] <= '9':
			n := int(sub[i+1] - '0')
			if n > groups {
				return nil, fmt.Errorf(`%q refers to group \%d but the pattern has %d capturing groups`, sub, n, groups)
			}
			out = append(out, '$', '{', sub[i+1], '}')
			i++
		default:
			return nil, fmt.Errorf(`invalid escape "\%c" in %q (use \0-\9 or \\)`, sub[i+1], sub)
		}
	}
	return out, nil
}

// MaxStreamDuration is a route's max_stream_duration: the stream ends
// Max after it began (0: no bound); with UseHeader, a request's
// grpc-timeout header (capped at HeaderMax when HeaderMax is not 0, then
// less HeaderOffset when longer) takes Max's place when it has one.
type MaxStreamDuration struct {
	Max                     time.Duration
	HasMax                  bool // max_stream_duration's own field is set
	UseHeader               bool
	HeaderMax, HeaderOffset time.Duration
}

// For returns the bound of a stream whose grpc-timeout is header (ok
// false: none); 0 means none. set is false when the route sets no bound
// for it: the connection manager's max_stream_duration applies.
func (m *MaxStreamDuration) For(header time.Duration, ok bool) (d time.Duration, set bool) {
	if !m.UseHeader || !ok || header == 0 {
		return m.Max, m.HasMax
	}
	// As Envoy: capped first, then the offset taken off when it is
	// shorter than what is left.
	if m.HeaderMax > 0 && header > m.HeaderMax {
		header = m.HeaderMax
	}
	if header > m.HeaderOffset {
		header -= m.HeaderOffset
	}
	return header, true
}

// GRPCTimeout is Envoy's max_grpc_timeout and grpc_timeout_offset: a
// gRPC request times out after its grpc-timeout less Offset (when the
// header is longer than Offset), capped at Max; without the header (or
// with 0, which means none), after Max; Max 0 means no cap (and no
// timeout without the header).
type GRPCTimeout struct {
	Max, Offset time.Duration
}

// For returns the timeout of a request whose grpc-timeout is header (ok
// false: none); 0 means none.
func (g *GRPCTimeout) For(header time.Duration, ok bool) time.Duration {
	if !ok || header == 0 {
		return g.Max
	}
	if header > g.Offset {
		header -= g.Offset
	}
	if g.Max > 0 && header > g.Max {
		return g.Max
	}
	return header
}
