package router

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/protocol"
)

// Options carries the HTTP connection manager settings that change how a
// Table matches.
type Options struct {
	// StripAnyHostPort matches hosts without any port in :authority
	// (HCM strip_any_host_port).
	StripAnyHostPort bool
	// StripMatchingHostPort matches hosts without the :authority port when
	// it equals ListenerPort (HCM strip_matching_host_port).
	StripMatchingHostPort bool
	// ListenerPort is the port the listener accepts on; required by
	// StripMatchingHostPort.
	ListenerPort int
	// Runtime gives runtime_fraction its values (nil: the defaults).
	Runtime *config.Runtime
}

// Table is a compiled RouteConfiguration. It is immutable and safe for
// concurrent use.
type Table struct {
	name     string
	hosts    hostIndex
	strip    portStrip
	clusters []string

	validateClusters, validateSet bool
}

// defaultMaxBody is Envoy's max_direct_response_body_size_bytes default.
const defaultMaxBody = 4096

// Compile validates rc and builds a Table. Validation is the generated
// ValidateAll followed by our semantic checks; every error names the field
// path, e.g. "virtual_hosts[1].routes[0].match.safe_regex: ...". The only
// I/O is reading direct_response bodies given by filename.
func Compile(rc *routev3.RouteConfiguration, opt Options) (*Table, error) {
	if rc == nil {
		return nil, errors.New("route configuration is nil")
	}
	if err := rc.ValidateAll(); err != nil {
		return nil, fmt.Errorf("invalid route configuration: %w", err)
	}
	if rc.GetVhds() != nil {
		// The listener manager takes vhds off a route configuration from
		// RDS and adds the virtual hosts VHDS delivers.
		return nil, config.At("vhds", errors.New("VHDS is for a route configuration from RDS (rds), not an inline one"))
	}
	if err := checkSupported(rc.ProtoReflect(), ""); err != nil {
		return nil, err
	}
	strip, err := newPortStrip(opt, rc.GetIgnorePortInHostMatching())
	if err != nil {
		return nil, err
	}
	c, err := newCompiler(rc)
	if err != nil {
		return nil, err
	}
	c.rt = opt.Runtime
	if c.mirrors, err = c.compileMirrors(rc.GetRequestMirrorPolicies(), ""); err != nil {
		return nil, err
	}
	t := &Table{name: rc.GetName(), strip: strip}
	if v := rc.GetValidateClusters(); v != nil {
		t.validateClusters, t.validateSet = v.GetValue(), true
	}
	if err := c.virtualHosts(t); err != nil {
		return nil, err
	}
	t.clusters = c.clusterNames()
	return t, nil
}

// Name returns the route configuration's name.
func (t *Table) Name() string { return t.name }

// ClusterNames returns, sorted and without repeats, every cluster a route of
// t can send to. The caller must not modify the slice.
func (t *Table) ClusterNames() []string { return t.clusters }

// ValidateClusters returns validate_clusters and whether it was set; Envoy
// defaults it to true for a static route_config and false for RDS.
func (t *Table) ValidateClusters() (validate, set bool) {
	return t.validateClusters, t.validateSet
}

// Match returns the route for a request, or nil when no virtual host or no
// route matches (the proxy answers 404). It does not modify h and does not
// allocate for prefix, path and exact-domain matches or header matches on
// single-valued headers.
func (t *Table) Match(h *protocol.Headers) *Route { return t.MatchRandom(h, 0) }

// MatchRandom is Match with the request's random number, which routes
// with a runtime_fraction sample.
func (t *Table) MatchRandom(h *protocol.Headers, random uint64) *Route {
	vh := t.virtualHost(h.Host())
	if vh == nil {
		return nil
	}
	if r := vh.tlsRedirectFor(h); r != nil {
		return r
	}
	path := h.Path()
	for _, r := range vh.routes {
		if r.match.matches(h, path, random) {
			return r
		}
	}
	return nil
}

// compiler holds what every route of one RouteConfiguration shares.
type compiler struct {
	rc           *routev3.RouteConfiguration
	global       *mutation
	mostSpecific bool
	maxBody      int
	clusters     map[string]struct{}
	// filters is the route configuration's own typed_per_filter_config.
	filters map[string]any
	rt      *config.Runtime
	// mirrors is the route configuration's request_mirror_policies.
	mirrors []*MirrorPolicy
}

func newCompiler(rc *routev3.RouteConfiguration) (*compiler, error) {
	global, err := compileMutation(headerLists{
		reqAdd: rc.GetRequestHeadersToAdd(), reqRemove: rc.GetRequestHeadersToRemove(),
		respAdd: rc.GetResponseHeadersToAdd(), respRemove: rc.GetResponseHeadersToRemove(),
	}, "")
	if err != nil {
		return nil, err
	}
	c := &compiler{rc: rc, global: global, mostSpecific: rc.GetMostSpecificHeaderMutationsWins(),
		maxBody: defaultMaxBody, clusters: map[string]struct{}{}}
	if m := rc.GetMaxDirectResponseBodySizeBytes(); m != nil {
		c.maxBody = int(m.GetValue())
	}
	if c.filters, err = compileFilterConfigs(rc.GetTypedPerFilterConfig(), ""); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *compiler) virtualHosts(t *Table) error {
	names := map[string]int{}
	for i, cfg := range c.rc.GetVirtualHosts() {
		path := indexPath("", "virtual_hosts", i)
		if j, dup := names[cfg.GetName()]; dup {
			return fmt.Errorf("%s.name: duplicate virtual host name %q (also virtual_hosts[%d])", path, cfg.GetName(), j)
		}
		names[cfg.GetName()] = i
		vh, err := c.virtualHost(cfg, path)
		if err != nil {
			return err
		}
		for j, d := range cfg.GetDomains() {
			old, err := t.hosts.add(d, vh)
			if err != nil {
				return fmt.Errorf("%s: %w", indexPath(path, "domains", j), err)
			}
			if old != nil {
				return fmt.Errorf("%s: duplicate domain %q, already in virtual host %q",
					indexPath(path, "domains", j), d, old.Name)
			}
		}
	}
	return nil
}

func (c *compiler) virtualHost(cfg *routev3.VirtualHost, path string) (*VirtualHost, error) {
	own, err := compileMutation(headerLists{
		reqAdd: cfg.GetRequestHeadersToAdd(), reqRemove: cfg.GetRequestHeadersToRemove(),
		respAdd: cfg.GetResponseHeadersToAdd(), respRemove: cfg.GetResponseHeadersToRemove(),
	}, path)
	if err != nil {
		return nil, err
	}
	vh := &VirtualHost{Name: cfg.GetName(), headers: own,
		AttemptCountUp: cfg.GetIncludeRequestAttemptCount(), AttemptCountDown: cfg.GetIncludeAttemptCountInResponse(),
		requireTLS: cfg.GetRequireTls()}
	if vh.requireTLS != routev3.VirtualHost_NONE {
		vh.tlsRedirect = &Route{VirtualHost: vh, Redirect: &Redirect{Status: 301, scheme: "https", sslRedirect: true}}
	}
	var retry *RetryPolicy
	if cfg.GetRetryPolicy() != nil {
		if retry, err = compileRetry(cfg.GetRetryPolicy(), joinPath(path, "retry_policy")); err != nil {
			return nil, err
		}
	}
	vhFilters, err := compileFilterConfigs(cfg.GetTypedPerFilterConfig(), path)
	if err != nil {
		return nil, err
	}
	filters := mergeFilters(c.filters, vhFilters)
	vhMirrors, err := c.compileMirrors(cfg.GetRequestMirrorPolicies(), path)
	if err != nil {
		return nil, err
	}
	for i, rcfg := range cfg.GetRoutes() {
		rpath := indexPath(path, "routes", i)
		r, err := c.route(rcfg, rpath)
		if err != nil {
			return nil, err
		}
		r.VirtualHost = vh
		if r.Retry == nil {
			r.Retry = retry
		}
		rf, err := compileFilterConfigs(rcfg.GetTypedPerFilterConfig(), rpath)
		if err != nil {
			return nil, err
		}
		r.PerFilterConfig = mergeFilters(filters, rf)
		if r.Cluster != "" || r.Weighted != nil {
			r.Mirrors = c.mostSpecificMirrors(r.Mirrors, vhMirrors, c.mirrors)
		}
		// Until now headerLevels[0] held the route's own mutation.
		r.headerLevels = c.levels(r.headerLevels[0], own)
		vh.routes = append(vh.routes, r)
	}
	return vh, nil
}

// levels orders the route, virtual host and global mutations: most specific
// first by default (so the least specific overwrites last, as Envoy), or
// the reverse with most_specific_header_mutations_wins.
func (c *compiler) levels(route, vhost *mutation) levels {
	if c.mostSpecific {
		return levels{c.global, vhost, route}
	}
	return levels{route, vhost, c.global}
}

func (c *compiler) route(cfg *routev3.Route, path string) (*Route, error) {
	m, err := compileRouteMatch(cfg.GetMatch(), joinPath(path, "match"))
	m.rt = c.rt
	if err != nil {
		return nil, err
	}
	own, err := compileMutation(headerLists{
		reqAdd: cfg.GetRequestHeadersToAdd(), reqRemove: cfg.GetRequestHeadersToRemove(),
		respAdd: cfg.GetResponseHeadersToAdd(), respRemove: cfg.GetResponseHeadersToRemove(),
	}, path)
	if err != nil {
		return nil, err
	}
	r := &Route{Name: cfg.GetName(), match: m, headerLevels: levels{own}, Decorator: cfg.GetDecorator().GetOperation()}
	switch a := cfg.GetAction().(type) {
	case *routev3.Route_Route:
		err = c.routeAction(r, a.Route, joinPath(path, "route"))
	case *routev3.Route_Redirect:
		r.Redirect, err = compileRedirect(a.Redirect, &r.match, joinPath(path, "redirect"))
	case *routev3.Route_DirectResponse:
		r.DirectResponse, err = c.directResponse(a.DirectResponse, joinPath(path, "direct_response"))
	default:
		err = fmt.Errorf("%s: no action", path)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (c *compiler) routeAction(r *Route, cfg *routev3.RouteAction, path string) error {
	if err := c.clusterSpecifier(r, cfg, path); err != nil {
		return err
	}
	r.ClusterNotFoundStatus = clusterNotFoundStatus[cfg.GetClusterNotFoundResponseCode()]
	r.AutoHostRewrite = cfg.GetAutoHostRewrite().GetValue()
	r.AppendXForwardedHost = cfg.GetAppendXForwardedHost()
	if lit := cfg.GetHostRewriteLiteral(); lit != "" {
		r.hostRewrite, r.hasHost = lit, true
	}
	var err error
	if r.rewrite, err = compileRewrite(cfg.GetPrefixRewrite(), cfg.GetRegexRewrite(), &r.match, path); err != nil {
		return err
	}
	if err := r.setTimeouts(cfg, path); err != nil {
		return err
	}
	if r.Mirrors, err = c.compileMirrors(cfg.GetRequestMirrorPolicies(), path); err != nil {
		return err
	}
	if cfg.GetRetryPolicy() != nil {
		r.Retry, err = compileRetry(cfg.GetRetryPolicy(), joinPath(path, "retry_policy"))
	}
	return err
}

var clusterNotFoundStatus = map[routev3.RouteAction_ClusterNotFoundResponseCode]int{
	routev3.RouteAction_SERVICE_UNAVAILABLE:   503,
	routev3.RouteAction_NOT_FOUND:             404,
	routev3.RouteAction_INTERNAL_SERVER_ERROR: 500,
}

func (c *compiler) clusterSpecifier(r *Route, cfg *routev3.RouteAction, path string) error {
	switch s := cfg.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		r.Cluster = s.Cluster
		c.clusters[s.Cluster] = struct{}{}
		return nil
	case *routev3.RouteAction_WeightedClusters:
		return c.weighted(r, s.WeightedClusters, joinPath(path, "weighted_clusters"))
	}
	return fmt.Errorf("%s: no cluster specifier", path)
}

func (c *compiler) weighted(r *Route, cfg *routev3.WeightedCluster, path string) error {
	var total uint64
	for i, cw := range cfg.GetClusters() {
		if cw.GetName() == "" {
			return fmt.Errorf("%s.name: must not be empty", indexPath(path, "clusters", i))
		}
		w := cw.GetWeight().GetValue()
		total += uint64(w)
		r.Weighted = append(r.Weighted, WeightedCluster{Name: cw.GetName(), Weight: w})
		r.cumWeights = append(r.cumWeights, total)
		c.clusters[cw.GetName()] = struct{}{}
	}
	if total == 0 {
		return fmt.Errorf("%s.clusters: the weights add up to 0", path)
	}
	if tw := cfg.GetTotalWeight(); tw != nil && uint64(tw.GetValue()) != total {
		return fmt.Errorf("%s.total_weight: is %d but the weights add up to %d", path, tw.GetValue(), total)
	}
	return nil
}

func (r *Route) setTimeouts(cfg *routev3.RouteAction, path string) error {
	var err error
	r.Timeout = DefaultTimeout
	if cfg.GetTimeout() != nil {
		if r.Timeout, err = optDuration(cfg.GetTimeout(), joinPath(path, "timeout")); err != nil {
			return err
		}
	}
	if cfg.GetIdleTimeout() != nil {
		if r.IdleTimeout, err = optDuration(cfg.GetIdleTimeout(), joinPath(path, "idle_timeout")); err != nil {
			return err
		}
		if r.IdleTimeout == 0 {
			r.IdleTimeout = IdleTimeoutDisabled
		}
	}
	return r.setGRPCTimeout(cfg, path)
}

// setGRPCTimeout reads max_grpc_timeout and grpc_timeout_offset
// (deprecated, and what Istio's gateways get), and max_stream_duration
// (what Istio's sidecars get).
func (r *Route) setGRPCTimeout(cfg *routev3.RouteAction, path string) error {
	if m := cfg.GetMaxStreamDuration(); m != nil {
		msd := &MaxStreamDuration{UseHeader: m.GetGrpcTimeoutHeaderMax() != nil, HasMax: m.GetMaxStreamDuration() != nil}
		p := joinPath(path, "max_stream_duration")
		var err error
		if msd.Max, err = optDuration(m.GetMaxStreamDuration(), joinPath(p, "max_stream_duration")); err != nil {
			return err
		}
		if msd.HeaderMax, err = optDuration(m.GetGrpcTimeoutHeaderMax(), joinPath(p, "grpc_timeout_header_max")); err != nil {
			return err
		}
		if msd.HeaderOffset, err = optDuration(m.GetGrpcTimeoutHeaderOffset(), joinPath(p, "grpc_timeout_header_offset")); err != nil {
			return err
		}
		r.MaxStream = msd
	}
	//nolint:staticcheck // deprecated in v3, still what Istio sends
	maxV, offV := cfg.GetMaxGrpcTimeout(), cfg.GetGrpcTimeoutOffset()
	if maxV == nil {
		if offV != nil {
			return config.At(joinPath(path, "grpc_timeout_offset"), errors.New("takes effect only with max_grpc_timeout"))
		}
		return nil
	}
	g := &GRPCTimeout{}
	var err error
	if g.Max, err = optDuration(maxV, joinPath(path, "max_grpc_timeout")); err != nil {
		return err
	}
	if g.Offset, err = optDuration(offV, joinPath(path, "grpc_timeout_offset")); err != nil {
		return err
	}
	r.GRPCTimeout = g
	return nil
}

// optDuration converts a duration field; nil is 0 and negatives are errors.
func optDuration(d *durationpb.Duration, path string) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("%s: must not be negative, got %v", path, v)
	}
	return v, nil
}

func (c *compiler) directResponse(cfg *routev3.DirectResponseAction, path string) (*DirectResponse, error) {
	d := &DirectResponse{Status: int(cfg.GetStatus())}
	if cfg.GetBody() == nil {
		return d, nil
	}
	body, err := readBody(cfg.GetBody(), c.maxBody, joinPath(path, "body"))
	if err != nil {
		return nil, err
	}
	d.Body = body
	return d, nil
}

// readBody reads a DataSource of at most max bytes; a file is read only up
// to that bound.
func readBody(ds *corev3.DataSource, max int, path string) ([]byte, error) {
	var body []byte
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		body = []byte(s.InlineString)
	case *corev3.DataSource_InlineBytes:
		body = slices.Clone(s.InlineBytes)
	case *corev3.DataSource_Filename:
		b, err := readFileLimit(s.Filename, max)
		if err != nil {
			return nil, fmt.Errorf("%s.filename: %w", path, err)
		}
		if len(b) > max {
			return nil, fmt.Errorf("%s.filename: %s is larger than max_direct_response_body_size_bytes (%d)", path, s.Filename, max)
		}
		body = b
	default:
		return nil, fmt.Errorf("%s: no data source", path)
	}
	if len(body) > max {
		return nil, fmt.Errorf("%s: body is %d bytes, larger than max_direct_response_body_size_bytes (%d)", path, len(body), max)
	}
	return body, nil
}

func readFileLimit(name string, max int) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, int64(max)+1))
}

func (c *compiler) clusterNames() []string {
	return slices.Sorted(maps.Keys(c.clusters))
}
