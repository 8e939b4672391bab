package httpconnmgr

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/proxy"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/upstream"
)

// Defaults, as Envoy's.
const (
	defaultIdleTimeout       = time.Hour
	defaultStreamIdleTimeout = 5 * time.Minute
	defaultDrainTimeout      = 5 * time.Second
	defaultMaxHeadersKB      = 60
	defaultMaxHeaders        = 100
	defaultServerName        = "strait"
	retryBufferLimit         = 64 << 10
	// defaultRequestHeadersTimeout departs from Envoy (which has none
	// unless set): a proxy facing the internet bounds how long a request
	// head may trickle in, as Envoy's edge guide, nginx (60 s) and HAProxy
	// (timeout http-request) do. 0s in the config turns it off.
	defaultRequestHeadersTimeout = 10 * time.Second
)

// build turns a validated HttpConnectionManager into a proxy.Config.
func build(bc *filter.BuildContext, m *hcmv3.HttpConnectionManager) (*proxy.Config, error) {
	if err := unsupported(m); err != nil {
		return nil, err
	}
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	codec, err := codecFor(m.GetCodecType())
	if err != nil {
		return nil, config.At("codec_type", err)
	}
	cfg := &proxy.Config{
		StatPrefix:        m.GetStatPrefix(),
		Clusters:          bc.Clusters,
		Pool:              bc.Pool,
		Log:               bc.Log.With("filter", Name, "stat_prefix", m.GetStatPrefix()),
		Codec:             codec,
		Draining:          bc.Draining,
		ServerName:        defaultServerName,
		UseRemoteAddress:  m.GetUseRemoteAddress().GetValue(),
		XffNumTrustedHops: int(m.GetXffNumTrustedHops()),
		GenerateRequestID: m.GetGenerateRequestId() == nil || m.GetGenerateRequestId().GetValue(),
		Proxy100Continue:  m.GetProxy_100Continue(),
		IdleTimeout:       defaultIdleTimeout,
		StreamIdleTimeout: defaultStreamIdleTimeout,
		RetryBufferLimit:  retryBufferLimit,
		Codecs: protocol.ServerOptions{
			MaxHeaderBytes:  defaultMaxHeadersKB << 10,
			MaxHeaders:      defaultMaxHeaders,
			BodyBufferLimit: 64 << 10,
			Scheme:          "http",
		},
	}
	if bc.BufferLimit > 0 {
		// The request body buffered between the reader and the worker is
		// bounded by the listener's per-connection buffer limit.
		cfg.Codecs.BodyBufferLimit = bc.BufferLimit
	}
	applyTimeouts(cfg, m)
	upstream.ApplyHTTP2Options(&cfg.Codecs.HTTP2, m.GetHttp2ProtocolOptions())
	switch m.GetServerHeaderTransformation() {
	case hcmv3.HttpConnectionManager_PASS_THROUGH:
		cfg.ServerName = ""
	default:
		if m.GetServerName() != "" {
			cfg.ServerName = m.GetServerName()
		}
	}
	if err := pathSettings(cfg, m); err != nil {
		return nil, err
	}
	if err := tracingSettings(bc, cfg, m); err != nil {
		return nil, err
	}
	cfg.XFCC = xfccModes[m.GetForwardClientCertDetails()]
	// (As in Envoy, the details shape only what APPEND_FORWARD and
	// SANITIZE_SET write.)
	if d := m.GetSetCurrentClientCertDetails(); d != nil {
		cfg.ClientCertDetails = proxy.ClientCertDetails{Subject: d.GetSubject().GetValue(), Cert: d.GetCert(),
			Chain: d.GetChain(), DNS: d.GetDns(), URI: d.GetUri()}
	}
	if kb := m.GetMaxRequestHeadersKb(); kb != nil {
		cfg.Codecs.MaxHeaderBytes = int(kb.GetValue()) << 10
	}
	if err := upgrades(cfg, m); err != nil {
		return nil, err
	}
	ropt := router.Options{
		StripAnyHostPort:      m.GetStripAnyHostPort(),
		StripMatchingHostPort: m.GetStripMatchingHostPort(),
		ListenerPort:          bc.Port,
		Runtime:               bc.Runtime,
	}
	cfg.Routes = new(atomic.Pointer[router.Table])
	var onDemand bool
	if cfg.Filters, onDemand, err = httpFilters(bc, m, cfg); err != nil {
		return nil, err
	}
	cfg.Stats = proxy.NewStats(bc.Stats, m.GetStatPrefix())
	if cfg.AccessLogs, err = accesslog.Build(bc.AccessLogs, m.GetAccessLog()); err != nil {
		return nil, config.At("access_log", err)
	}
	if sr := m.GetScopedRoutes(); sr != nil {
		cfg.Scopes = &atomic.Pointer[router.Scopes]{}
		if err := subscribeScopes(bc, sr, ropt, cfg.Scopes); err != nil {
			return nil, config.At("scoped_routes", err)
		}
		return cfg, nil
	}
	if rds := m.GetRds(); rds != nil {
		if err := subscribeRoutes(bc, rds, ropt, cfg.Routes); err != nil {
			return nil, config.At("rds", err)
		}
		if onDemand {
			cfg.VirtualHosts = bc.Routes.OnDemand(rds.GetRouteConfigName())
		}
		return cfg, nil
	}
	rc := m.GetRouteConfig()
	if rc == nil {
		return nil, config.At("route_config", fmt.Errorf("required: give route_config or rds"))
	}
	t, err := router.Compile(rc, ropt)
	if err != nil {
		return nil, config.At("route_config", err)
	}
	if v, set := t.ValidateClusters(); v || !set {
		if err := checkClusters(bc, t); err != nil {
			return nil, err
		}
	}
	cfg.Routes.Store(t)
	return cfg, nil
}

// subscribeRoutes asks the RDS source for the named route configuration.
// Each version is compiled for this connection manager (its port
// stripping) before it is accepted; until the first arrives, requests get
// 404. As in Envoy, clusters named by RDS routes are looked up per request
// (503 when missing) unless the route configuration sets
// validate_clusters.
func subscribeRoutes(bc *filter.BuildContext, rds *hcmv3.Rds, opt router.Options, dst *atomic.Pointer[router.Table]) error {
	if bc.Routes == nil {
		return fmt.Errorf("RDS needs dynamic_resources with an ADS config source")
	}
	cs := rds.GetConfigSource()
	switch {
	case bc.CheckSource != nil:
		if err := bc.CheckSource(cs); err != nil {
			return config.At("config_source", err)
		}
	case cs.GetAds() == nil:
		return config.At("config_source", fmt.Errorf("only ads: {} is supported"))
	}
	return bc.Routes.Subscribe(rds.GetRouteConfigName(), cs, func(rc *routev3.RouteConfiguration) (func(), error) {
		if rc == nil {
			return func() { dst.Store(nil) }, nil
		}
		t, err := router.Compile(rc, opt)
		if err != nil {
			return nil, err
		}
		if v, _ := t.ValidateClusters(); v {
			if err := checkClusters(bc, t); err != nil {
				return nil, err
			}
		}
		return func() { dst.Store(t) }, nil
	})
}

func applyTimeouts(cfg *proxy.Config, m *hcmv3.HttpConnectionManager) {
	if cp := m.GetCommonHttpProtocolOptions(); cp != nil {
		if d := cp.GetIdleTimeout(); d != nil {
			cfg.IdleTimeout = d.AsDuration()
		}
		if v := cp.GetMaxHeadersCount(); v != nil {
			cfg.Codecs.MaxHeaders = int(v.GetValue())
		}
		if v := cp.GetMaxRequestsPerConnection(); v != nil {
			cfg.MaxRequestsPerConnection = int(v.GetValue())
		}
		if d := cp.GetMaxStreamDuration(); d != nil {
			cfg.MaxStreamDuration = d.AsDuration()
		}
	}
	if d := m.GetStreamIdleTimeout(); d != nil {
		cfg.StreamIdleTimeout = d.AsDuration()
	}
	cfg.Codecs.StreamIdleTimeout = cfg.StreamIdleTimeout
	// drain_timeout (Envoy's default 5 s): how long a drained idle
	// HTTP/1.1 connection stays open for a request already sent.
	cfg.Codecs.DrainGrace = defaultDrainTimeout
	if d := m.GetDrainTimeout(); d != nil {
		cfg.Codecs.DrainGrace = d.AsDuration()
	}
	if d := m.GetRequestTimeout(); d != nil {
		cfg.RequestTimeout = d.AsDuration()
	}
	cfg.Codecs.RequestHeadersTimeout = defaultRequestHeadersTimeout
	if d := m.GetRequestHeadersTimeout(); d != nil {
		cfg.Codecs.RequestHeadersTimeout = d.AsDuration()
	}
}

// codecFor maps codec_type to a codec; AUTO tells HTTP/2's connection
// preface from HTTP/1.1 by the first bytes.
func codecFor(t hcmv3.HttpConnectionManager_CodecType) (*protocol.Codec, error) {
	switch t {
	case hcmv3.HttpConnectionManager_HTTP1:
		return protocol.Get("http1")
	case hcmv3.HttpConnectionManager_HTTP2:
		return protocol.Get("http2")
	case hcmv3.HttpConnectionManager_AUTO:
		h1, err := protocol.Get("http1")
		if err != nil {
			return nil, err
		}
		h2, err := protocol.Get("http2")
		if err != nil {
			return nil, err
		}
		return protocol.Auto(h2, h1), nil
	}
	return nil, fmt.Errorf("%s is not supported yet (supported: AUTO, HTTP1, HTTP2)", t)
}

func upgrades(cfg *proxy.Config, m *hcmv3.HttpConnectionManager) error {
	for i, u := range m.GetUpgradeConfigs() {
		path := fmt.Sprintf("upgrade_configs[%d]", i)
		if len(u.GetFilters()) > 0 {
			return config.At(path+".filters", fmt.Errorf("per-upgrade filter chains are not supported yet"))
		}
		if u.GetEnabled() != nil && !u.GetEnabled().GetValue() {
			continue
		}
		if cfg.Upgrades == nil {
			cfg.Upgrades = map[string]bool{}
		}
		cfg.Upgrades[strings.ToLower(u.GetUpgradeType())] = true
	}
	return nil
}

func unsupported(m *hcmv3.HttpConnectionManager) error {
	switch {
	case m.GetXffNumTrustedHops() != 0:
		// Nothing derives a trusted client address from x-forwarded-for
		// yet (access logs, RBAC): only the default, which changes
		// nothing, is accepted.
		return config.At("xff_num_trusted_hops", fmt.Errorf("only 0 is supported yet"))
	}
	return nil
}

// checkClusters is Envoy's validate_clusters: every cluster a route names
// must exist when the listener is built.
func checkClusters(bc *filter.BuildContext, t *router.Table) error {
	for _, name := range t.ClusterNames() {
		if !bc.Clusters.Known(name) {
			return config.At("route_config", fmt.Errorf("route names cluster %q, which does not exist", name))
		}
	}
	return nil
}

// httpFilters builds the chain; the router must be last, and only last.
// onDemand reports the on_demand filter, which acts at the routing step
// (VHDS) and is left out of the chain.
func httpFilters(bc *filter.BuildContext, m *hcmv3.HttpConnectionManager, cfg *proxy.Config) (out []proxy.HTTPFilter, onDemand bool, err error) {
	hf := m.GetHttpFilters()
	if len(hf) == 0 {
		return nil, false, config.At("http_filters", fmt.Errorf("empty: the last filter must be envoy.filters.http.router"))
	}
	for i, f := range hf {
		path := fmt.Sprintf("http_filters[%d]", i)
		fbc := *bc
		fbc.StatPrefix = m.GetStatPrefix()
		fac, err := filter.BuildHTTP(&fbc, f.GetTypedConfig())
		if err != nil {
			return nil, false, config.At(path, fmt.Errorf("filter %q: %w", f.GetName(), err))
		}
		_, terminal := fac.(filter.Terminal)
		if cs, ok := fac.(filter.ChildSpans); ok && cs.StartChildSpan() && cfg.Tracing != nil {
			cfg.Tracing.ChildSpans = true // one span per upstream request, as spawn_upstream_span
		}
		_, od := fac.(filter.OnDemandRoutes)
		last := i == len(hf)-1
		switch {
		case terminal && !last:
			return nil, false, config.At(path, fmt.Errorf("filter %q is terminal and must be last", f.GetName()))
		case !terminal && last:
			return nil, false, config.At(path, fmt.Errorf("filter %q is not terminal: the last filter must be envoy.filters.http.router", f.GetName()))
		case terminal && f.GetDisabled():
			return nil, false, config.At(path+".disabled", fmt.Errorf("the terminal filter cannot be disabled"))
		case od:
			onDemand = !f.GetDisabled()
		case !terminal:
			// A disabled filter runs only on routes that enable it
			// (typed_per_filter_config).
			out = append(out, proxy.HTTPFilter{Name: f.GetName(), Factory: fac, DisabledByDefault: f.GetDisabled()})
		}
	}
	return out, onDemand, nil
}

// subscribeScopes asks the RDS source for scoped routes: the key builder
// is compiled now; each version of the scopes (inline, or from SRDS) and
// of their route configurations (RDS) is compiled into a scope map for
// this connection manager before it is accepted. A request in no scope,
// or in a scope whose routes have not arrived, gets 404.
func subscribeScopes(bc *filter.BuildContext, sr *hcmv3.ScopedRoutes, opt router.Options, dst *atomic.Pointer[router.Scopes]) error {
	kb, err := router.CompileKeyBuilder(sr.GetScopeKeyBuilder())
	if err != nil {
		return config.At("scope_key_builder", err)
	}
	check := func(path string, cs *corev3.ConfigSource) error {
		switch {
		case bc.CheckSource != nil:
			return config.At(path, bc.CheckSource(cs))
		case cs.GetAds() == nil:
			return config.At(path, fmt.Errorf("only ads: {} is supported"))
		}
		return nil
	}
	sub := filter.ScopeSubscription{RDS: sr.GetRdsConfigSource()}
	if sub.RDS != nil || sr.GetScopedRds() != nil {
		if err := check("rds_config_source", sub.RDS); err != nil {
			return err
		}
	}
	switch {
	case sr.GetScopedRouteConfigurationsList() != nil:
		sub.Inline = sr.GetScopedRouteConfigurationsList().GetScopedRouteConfigurations()
		if _, err := scopeKeys(sub.Inline); err != nil {
			return config.At("scoped_route_configurations_list", err)
		}
	case sr.GetScopedRds() != nil:
		if sr.GetScopedRds().GetSrdsResourcesLocator() != "" {
			return config.At("scoped_rds.srds_resources_locator", fmt.Errorf("not supported yet"))
		}
		sub.SRDS = sr.GetScopedRds().GetScopedRdsConfigSource()
		if err := check("scoped_rds.scoped_rds_config_source", sub.SRDS); err != nil {
			return err
		}
	default:
		return fmt.Errorf("give scoped_route_configurations_list or scoped_rds")
	}
	sub.Update = func(scopes []*routev3.ScopedRouteConfiguration, routes map[string]*routev3.RouteConfiguration) (func(), error) {
		if _, err := scopeKeys(scopes); err != nil {
			return nil, err
		}
		tables := map[string]*router.Table{}
		for _, sc := range scopes {
			rc := sc.GetRouteConfiguration()
			if rc == nil {
				rc = routes[sc.GetRouteConfigurationName()]
			}
			if rc == nil {
				continue // its routes have not arrived: 404 meanwhile
			}
			t, err := router.Compile(rc, opt)
			if err != nil {
				return nil, config.At(fmt.Sprintf("scope %q", sc.GetName()), err)
			}
			tables[router.ScopeKey(sc)] = t
		}
		s := router.NewScopes(kb, tables)
		return func() { dst.Store(s) }, nil
	}
	if sub.Inline != nil && allInline(sub.Inline) {
		// Nothing to fetch: built now, as a static route_config is.
		commit, err := sub.Update(sub.Inline, nil)
		if err != nil {
			return config.At("scoped_route_configurations_list", err)
		}
		commit()
		return nil
	}
	if bc.Routes == nil {
		return fmt.Errorf("scopes naming route configurations need dynamic_resources (RDS)")
	}
	return bc.Routes.SubscribeScopes(sub)
}

// allInline reports whether every scope carries its route configuration.
func allInline(scopes []*routev3.ScopedRouteConfiguration) bool {
	for _, sc := range scopes {
		if sc.GetRouteConfiguration() == nil {
			return false
		}
	}
	return true
}

// scopeKeys checks a set of scopes: each valid, none on demand, no two
// with the same key.
func scopeKeys(scopes []*routev3.ScopedRouteConfiguration) (map[string]string, error) {
	keys := map[string]string{}
	for _, sc := range scopes {
		if errs := config.ValidationErrors(sc.ValidateAll()); len(errs) > 0 {
			return nil, config.At(fmt.Sprintf("scope %q", sc.GetName()), config.Join(errs))
		}
		if sc.GetOnDemand() {
			return nil, config.At(fmt.Sprintf("scope %q: on_demand", sc.GetName()), fmt.Errorf("not supported yet"))
		}
		k := router.ScopeKey(sc)
		if other, dup := keys[k]; dup {
			return nil, fmt.Errorf("scopes %q and %q have the same key", other, sc.GetName())
		}
		keys[k] = sc.GetName()
	}
	return keys, nil
}

// xfccModes maps forward_client_cert_details.
var xfccModes = map[hcmv3.HttpConnectionManager_ForwardClientCertDetails]proxy.XFCCMode{
	hcmv3.HttpConnectionManager_SANITIZE:            proxy.XFCCSanitize,
	hcmv3.HttpConnectionManager_FORWARD_ONLY:        proxy.XFCCForwardOnly,
	hcmv3.HttpConnectionManager_APPEND_FORWARD:      proxy.XFCCAppendForward,
	hcmv3.HttpConnectionManager_SANITIZE_SET:        proxy.XFCCSanitizeSet,
	hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY: proxy.XFCCAlwaysForwardOnly,
}

// pathSettings reads normalize_path, merge_slashes and
// path_with_escaped_slashes_action.
func pathSettings(cfg *proxy.Config, m *hcmv3.HttpConnectionManager) error {
	pn := proxy.PathNormalization{Normalize: m.GetNormalizePath().GetValue(), MergeSlashes: m.GetMergeSlashes()}
	switch a := m.GetPathWithEscapedSlashesAction(); a {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		pn.EscapedSlashes = proxy.SlashesReject
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		pn.EscapedSlashes = proxy.SlashesUnescape
	default:
		return config.At("path_with_escaped_slashes_action", fmt.Errorf("%s is not supported yet", a))
	}
	cfg.PathNormalization = pn
	return nil
}
