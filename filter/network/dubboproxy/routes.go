package dubboproxy

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/rpc"
	"github.com/straitproxy/strait/router"
)

// Dubbo routes become one Envoy RouteConfiguration, compiled by the same
// router as HTTP's: a single virtual host whose routes are every route of
// every Dubbo route configuration, in order, each matching on the call's
// headers (service in :authority, method in :rpc-method, group and
// version, arguments as :param-N, attachments). Envoy's Dubbo matcher
// tries the route configurations in order and the first route that
// matches wins, across configurations: so does one ordered list.
//
// Each route retries a call once on connect failure (the call was never
// sent) and times out after defaultTimeout unless the caller's own
// timeout attachment is shorter.

// The attachments a Dubbo route configuration's group and version match.
const (
	groupHeader   = "group"
	versionHeader = "version"
)

// defaultTimeout bounds a call whose caller sent no timeout.
const defaultTimeout = 15

// needs says what the codec must read for these routes.
type needs struct {
	params bool
}

// compileRoutes turns the Dubbo route configurations into a table.
func compileRoutes(rcs []*dubbov3.RouteConfiguration, base string, opt router.Options, mirrors []*mirrorSpec) (*router.Table, needs, error) {
	var nd needs
	out := &routev3.RouteConfiguration{Name: "dubbo"}
	vh := &routev3.VirtualHost{Name: "dubbo", Domains: []string{"*"}}
	out.VirtualHosts = []*routev3.VirtualHost{vh}
	for i, rc := range rcs {
		path := fmt.Sprintf("%s[%d]", base, i)
		common, err := serviceMatchers(rc)
		if err != nil {
			return nil, nd, config.At(path+".interface", err)
		}
		for j, r := range rc.GetRoutes() {
			rpath := fmt.Sprintf("%s.routes[%d]", path, j)
			er, err := route(r, common, rpath, &nd, mirrorsFor(mirrors, rc.GetName()))
			if err != nil {
				return nil, nd, err
			}
			vh.Routes = append(vh.Routes, er)
		}
	}
	t, err := router.Compile(out, opt)
	if err != nil {
		// Each part was checked with its own path: this is a bug.
		return nil, nd, fmt.Errorf("%s: %v", base, err)
	}
	return t, nd, nil
}

// serviceMatchers match the configuration's interface, group and
// version. An interface "*" matches any; "*.suffix" and "prefix.*" match
// a non-empty rest.
func serviceMatchers(rc *dubbov3.RouteConfiguration) ([]*routev3.HeaderMatcher, error) {
	var ms []*routev3.HeaderMatcher
	iface := rc.GetInterface()
	switch {
	case iface == "*":
	case strings.HasPrefix(iface, "*"):
		ms = append(ms, strMatch(protocol.Authority, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: iface[1:]}}),
			&routev3.HeaderMatcher{Name: protocol.Authority, InvertMatch: true,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(iface[1:])}})
	case strings.HasSuffix(iface, "*"):
		ms = append(ms, strMatch(protocol.Authority, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: iface[:len(iface)-1]}}),
			&routev3.HeaderMatcher{Name: protocol.Authority, InvertMatch: true,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(iface[:len(iface)-1])}})
	default:
		ms = append(ms, strMatch(protocol.Authority, exact(iface)))
	}
	if g := rc.GetGroup(); g != "" {
		ms = append(ms, strMatch(groupHeader, exact(g)))
	}
	if v := rc.GetVersion(); v != "" {
		ms = append(ms, strMatch(versionHeader, exact(v)))
	}
	return ms, nil
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func strMatch(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

// route converts one Dubbo route.
func route(r *dubbov3.Route, common []*routev3.HeaderMatcher, path string, nd *needs, mirrors []*routev3.RouteAction_RequestMirrorPolicy) (*routev3.Route, error) {
	headers := append([]*routev3.HeaderMatcher(nil), common...)
	m := r.GetMatch().GetMethod()
	if name := m.GetName(); name != nil {
		hm := strMatch(protocol.RPCMethod, name)
		if err := check(hm); err != nil {
			return nil, config.At(path+".match.method.name", err)
		}
		headers = append(headers, hm)
	}
	// Parameters in index order, so the table is the same each time.
	idx := make([]int, 0, len(m.GetParamsMatch()))
	for k := range m.GetParamsMatch() {
		idx = append(idx, int(k))
	}
	sort.Ints(idx)
	for _, k := range idx {
		pm := m.GetParamsMatch()[uint32(k)]
		name := fmt.Sprintf("%s%d", rpc.ParamPrefix, k)
		ppath := fmt.Sprintf("%s.match.method.params_match[%d]", path, k)
		switch s := pm.GetParameterMatchSpecifier().(type) {
		case *dubbov3.MethodMatch_ParameterMatchSpecifier_ExactMatch:
			headers = append(headers, strMatch(name, exact(s.ExactMatch)))
		case *dubbov3.MethodMatch_ParameterMatchSpecifier_RangeMatch:
			headers = append(headers, &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: s.RangeMatch}})
		default:
			return nil, config.At(ppath, errors.New("exact_match or range_match is required"))
		}
		nd.params = true
	}
	for i, hm := range r.GetMatch().GetHeaders() {
		if err := check(hm); err != nil {
			return nil, config.At(fmt.Sprintf("%s.match.headers[%d]", path, i), err)
		}
		headers = append(headers, hm)
	}
	a := r.GetRoute()
	if a.GetMetadataMatch() != nil {
		return nil, config.At(path+".route.metadata_match", errors.New("not supported yet (needs the subset load balancer)"))
	}
	ra := &routev3.RouteAction{
		Timeout: durationpb.New(defaultTimeout * 1e9),
		RetryPolicy: &routev3.RetryPolicy{
			RetryOn:    "connect-failure",
			NumRetries: wrapperspb.UInt32(1),
		},
		RequestMirrorPolicies: mirrors,
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *dubbov3.RouteAction_Cluster:
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: cs.Cluster}
	case *dubbov3.RouteAction_WeightedClusters:
		for i, w := range cs.WeightedClusters.GetClusters() {
			if err := weightedOK(w); err != nil {
				return nil, config.At(fmt.Sprintf("%s.route.weighted_clusters.clusters[%d]", path, i), err)
			}
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: cs.WeightedClusters}
	default:
		return nil, config.At(path+".route", errors.New("cluster or weighted_clusters is required"))
	}
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: headers},
		Action: &routev3.Route_Route{Route: ra},
	}, nil
}

// weightedOK refuses what a Dubbo call cannot use of an HTTP weighted
// cluster (header mutations, per-filter config, host rewrites).
func weightedOK(w *routev3.WeightedCluster_ClusterWeight) error {
	switch {
	case w.GetClusterHeader() != "":
		return errors.New("cluster_header is not supported for Dubbo")
	case len(w.GetRequestHeadersToAdd()) > 0 || len(w.GetRequestHeadersToRemove()) > 0 ||
		len(w.GetResponseHeadersToAdd()) > 0 || len(w.GetResponseHeadersToRemove()) > 0:
		return errors.New("header mutations do not apply to Dubbo calls")
	case len(w.GetTypedPerFilterConfig()) > 0:
		return errors.New("typed_per_filter_config is not supported for Dubbo")
	case w.GetMetadataMatch() != nil:
		return errors.New("metadata_match is not supported yet")
	case w.GetHostRewriteSpecifier() != nil:
		return errors.New("host rewrites do not apply to Dubbo calls")
	}
	return nil
}

// check compiles one header matcher alone, for an error with its own
// path.
func check(hm *routev3.HeaderMatcher) error {
	rc := &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"},
		Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{hm}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}}}}}}}
	if _, err := router.Compile(rc, router.Options{}); err != nil {
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return errors.New(msg)
	}
	return nil
}
