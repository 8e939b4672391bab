// Package dubboproxy is the envoy.filters.network.dubbo_proxy network
// filter: it decodes Dubbo calls on a connection (protocol/dubbo on the
// framed-RPC seam) and runs each through the proxy engine, as the HTTP
// connection manager runs requests: Dubbo routes (interface, group,
// version, method, parameters, attachments) pick a cluster, stream
// filters apply, and calls from many connections share multiplexed
// upstream connections. It must not import other extensions.
package dubboproxy

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/rpc"
	"github.com/straitproxy/strait/proxy"
	"github.com/straitproxy/strait/router"
)

// Name is the filter's name; RouterName the Dubbo router filter's.
const (
	Name       = "envoy.filters.network.dubbo_proxy"
	RouterName = "envoy.filters.dubbo.router"
)

func init() {
	filter.RegisterNetwork(Name, &dubbov3.DubboProxy{}, func(bc *filter.BuildContext, m proto.Message) (filter.NetworkFactory, error) {
		cfg, err := build(bc, m.(*dubbov3.DubboProxy))
		if err != nil {
			return nil, err
		}
		return &Factory{cfg: cfg}, nil
	})
}

// Factory is a built Dubbo proxy.
type Factory struct {
	cfg *proxy.Config
}

var _ filter.NetworkFactory = (*Factory)(nil)

// Terminal: the Dubbo proxy consumes the connection's bytes.
func (*Factory) Terminal() bool { return true }

// NewHandler attaches a Dubbo proxy to c.
func (f *Factory) NewHandler(c *network.Conn, _ network.Handler) (network.Handler, error) {
	return proxy.NewConnHandler(f.cfg, c), nil
}

// Config exposes the built config (tests).
func (f *Factory) Config() *proxy.Config { return f.cfg }

// protocolName is the codec's name in protocol/rpc's registry.
const protocolName = "dubbo"

func build(bc *filter.BuildContext, m *dubbov3.DubboProxy) (*proxy.Config, error) {
	if m.GetStatPrefix() == "" {
		return nil, config.At("stat_prefix", errors.New("required"))
	}
	var rcs []*dubbov3.RouteConfiguration
	base := "route_config"
	switch rs := m.GetRouteSpecifier().(type) {
	case *dubbov3.DubboProxy_Drds:
		return nil, config.At("drds", errors.New("dynamic Dubbo routes are not supported yet: give multiple_route_config or route_config"))
	case *dubbov3.DubboProxy_MultipleRouteConfig:
		if len(m.GetRouteConfig()) > 0 {
			return nil, config.At("route_config", errors.New("give multiple_route_config or route_config, not both"))
		}
		rcs, base = rs.MultipleRouteConfig.GetRouteConfig(), "multiple_route_config.route_config"
	default:
		rcs = m.GetRouteConfig()
	}
	mirrors, err := mirrorsOf(m, rcs)
	if err != nil {
		return nil, err
	}
	routes, nd, err := compileRoutes(rcs, base, router.Options{Runtime: bc.Runtime}, mirrors)
	if err != nil {
		return nil, err
	}
	// With CDS a cluster may arrive after the listener that names it: it
	// is resolved per call then, as Envoy's Dubbo router does.
	for _, name := range routes.ClusterNames() {
		if !bc.Clusters.Dynamic() && !bc.Clusters.Known(name) {
			return nil, config.At(base, fmt.Errorf("a route names cluster %q, which does not exist", name))
		}
	}
	filters, err := dubboFilters(bc, m)
	if err != nil {
		return nil, err
	}
	newCodec, err := rpc.Lookup(protocolName)
	if err != nil {
		return nil, err
	}
	// The upstream codec is the registered one: pools are kept per host
	// and protocol name, whatever listener's calls they carry.
	up, err := protocol.Get(protocolName)
	if err != nil {
		return nil, err
	}
	// Attachments are always read: the caller's timeout is one, and
	// filters may read any; arguments only when routes match on them.
	codec := newCodec(rpc.ReadOptions{Attachments: true, Params: nd.params})
	cs := newCallStats(bc.Stats.Scope("dubbo", "envoy_dubbo_prefix", m.GetStatPrefix()))
	cfg := &proxy.Config{
		StatPrefix:        m.GetStatPrefix(),
		Clusters:          bc.Clusters,
		Pool:              bc.Pool,
		Log:               bc.Log.With("filter", Name, "stat_prefix", m.GetStatPrefix()),
		Codec:             rpc.NewCodec(codec, rpc.Options{MaxBody: bc.RPCMaxBody, Events: cs}),
		UpstreamCodec:     up,
		RPC:               true,
		Draining:          bc.Draining,
		IdleTimeout:       time.Hour,
		StreamIdleTimeout: 5 * time.Minute,
		RetryBufferLimit:  64 << 10,
		Filters:           filters,
		Routes:            new(atomic.Pointer[router.Table]),
		Stats:             proxy.NewStatsUnder(bc.Stats, "dubbo", "envoy_dubbo_prefix", m.GetStatPrefix()),
		Codecs:            protocol.ServerOptions{Scheme: "dubbo"},
		Observer:          cs,
	}
	cfg.Routes.Store(routes)
	return cfg, nil
}

// dubboFilters builds dubbo_filters. Envoy's only Dubbo filter is the
// router, which must be last (and is the default). Strait also takes
// stream filters here, by their HTTP filter config (RBAC, fault, local
// rate limit): they run on Dubbo calls through the same contract.
func dubboFilters(bc *filter.BuildContext, m *dubbov3.DubboProxy) ([]proxy.HTTPFilter, error) {
	var out []proxy.HTTPFilter
	df := m.GetDubboFilters()
	for i, f := range df {
		path := fmt.Sprintf("dubbo_filters[%d]", i)
		last := i == len(df)-1
		if f.GetName() == MirrorName && !last {
			continue // route decorations (mirror.go), read before the routes
		}
		if f.GetName() == RouterName {
			if !last {
				return nil, config.At(path, fmt.Errorf("%s must be last", RouterName))
			}
			if c := f.GetConfig(); c != nil && c.GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.router.v3.Router" {
				return nil, config.At(path+".config", fmt.Errorf("%s takes no config but its own Router (got %s)", RouterName, c.GetTypeUrl()))
			}
			continue
		}
		if last {
			return nil, config.At(path, fmt.Errorf("the last filter must be %s", RouterName))
		}
		if f.GetConfig() == nil {
			return nil, config.At(path+".config", fmt.Errorf("filter %q: config is required", f.GetName()))
		}
		fbc := *bc
		fbc.StatPrefix = m.GetStatPrefix()
		fac, err := filter.BuildHTTP(&fbc, f.GetConfig())
		if err != nil {
			return nil, config.At(path, fmt.Errorf("filter %q: %w", f.GetName(), err))
		}
		if _, terminal := fac.(filter.Terminal); terminal {
			return nil, config.At(path, fmt.Errorf("filter %q is terminal: the Dubbo router routes", f.GetName()))
		}
		if _, od := fac.(filter.OnDemandRoutes); od {
			return nil, config.At(path, fmt.Errorf("filter %q does not apply to Dubbo", f.GetName()))
		}
		out = append(out, proxy.HTTPFilter{Name: f.GetName(), Factory: fac})
	}
	return out, nil
}
