package upstream

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/transport"
)

// Cluster is a named group of hosts with one balancer, one set of
// circuit breakers and one set of stats.
type Cluster struct {
	Name string
	// StatName is alt_stat_name, else Name: the cluster's name in stats
	// (cluster.<StatName>.*) and access logs (%UPSTREAM_CLUSTER%).
	StatName           string
	ConnectTimeout     time.Duration
	IdleTimeout        time.Duration
	MaxRequestsPerConn int
	BufferLimit        int
	// defSocket is its transport_socket: its hosts' connections use it
	// unless one of sockets (transport_socket_matches) takes them.
	defSocket *hostSocket
	sockets   []*hostSocket
	// Protocol is the codec used towards the hosts ("http1", "http2");
	// Codec is that codec, resolved when the cluster is built. With
	// use_downstream_protocol_config, Downstream is set and H2 is the codec
	// for requests that arrived over HTTP/2.
	Protocol   string
	Codec      *protocol.Codec
	Downstream bool
	H2         *protocol.Codec
	// Auto (auto_config): each host speaks what ALPN negotiates, h2 (H2)
	// or HTTP/1.1 (Codec); learned on its first connection.
	Auto bool
	// Mux configures multiplexed connections (http2_protocol_options).
	Mux protocol.MuxOptions
	// RPC configures framed-RPC connections (Dubbo): the body limit and
	// heartbeat from metadata.filter_metadata.strait.
	RPC        protocol.MuxOptions
	Breaker    *Breaker
	Stats      *ClusterStats
	statsScope *stats.Scope // Stats' scope, forgotten when the cluster is removed
	LBName     string
	// attached are extensions' values kept with the cluster (Attached).
	attached sync.Map
	metadata *corev3.Metadata
	// connFilters are its upstream network filters (filters).
	connFilters []ConnFilter

	// EDSName is the assignment an EDS cluster waits for (its
	// eds_cluster_config.service_name, else its name); empty otherwise.
	EDSName string
	// EDSFetchTimeout is its eds_config.initial_fetch_timeout (0: none).
	EDSFetchTimeout time.Duration
	// EDSSource is its eds_config: where the assignment comes from.
	EDSSource *corev3.ConfigSource

	lb               LoadBalancer
	localityWeighted bool
	// panicThreshold is common_lb_config.healthy_panic_threshold, in
	// percent (default 50; 0: never panic).
	panicThreshold float64
	endpointsSet   atomic.Bool
	hosts          atomic.Pointer[HostSet]
	// assignMu serializes builds of the host set; src is what the last
	// was built from (assignment.go).
	assignMu sync.Mutex
	src      hostSource
	// outlier is its outlier detection (outlier.go); nil without.
	outlier *outlierDetector
	dns     *dnsResolver
	// origDst makes the hosts of an ORIGINAL_DST cluster (originaldst.go).
	origDst *originalDst
	// source is upstream_bind_config.source_address: the local address
	// its connections are made from (nil: the system's choice).
	source  net.Addr
	stopped chan struct{}
	once    sync.Once
	log     *slog.Logger
}

// StatsScope is the cluster's stats scope (cluster.<stat name>.), for
// extensions that count per cluster (gRPC stats); its stats are
// forgotten with the cluster's.
func (c *Cluster) StatsScope() *stats.Scope { return c.statsScope }

// Attached returns the value an extension keeps with this cluster under
// key, made by mk on first use (callers that race may each run mk; one
// value is kept). It lives as long as the cluster: a cluster that
// replaces it starts afresh.
func (c *Cluster) Attached(key any, mk func() any) any {
	if v, ok := c.attached.Load(key); ok {
		return v
	}
	v, _ := c.attached.LoadOrStore(key, mk())
	return v
}

// Hosts returns the current host set.
func (c *Cluster) Hosts() *HostSet { return c.hosts.Load() }

// Pick chooses a host; nil when the cluster has none.
func (c *Cluster) Pick(hint *PickHint) *Host {
	if c.origDst != nil {
		h := c.origDst.pick(hint)
		if h == nil {
			c.Stats.CxNoneHealthy.Inc()
		}
		return h
	}
	hs := c.hosts.Load()
	if len(hs.Hosts) == 0 {
		c.Stats.CxNoneHealthy.Inc()
		return nil
	}
	if hs.levels != nil {
		var r uint64
		if hint != nil {
			r = hint.Random
		}
		hs = hs.pickLevel(r)
	}
	if hs.panic {
		c.Stats.LBHealthyPanic.Inc()
	}
	return c.lb.Pick(hs, hint)
}

// Stop ends DNS refreshes and closes idle connections. In-flight requests
// finish on the connections they hold.
func (c *Cluster) Stop() {
	c.once.Do(func() {
		close(c.stopped)
		if c.outlier != nil {
			c.outlier.stop()
		}
		for _, h := range c.hosts.Load().All {
			h.removed.Store(true)
			h.closePools()
		}
	})
}

// ForgetStats drops the cluster's stats from the store: it was removed
// for good (a cluster of the same name that comes later starts from
// zero, as in Envoy). In-flight requests go on counting unseen.
func (c *Cluster) ForgetStats() {
	if c.statsScope != nil {
		c.statsScope.Forget()
	}
}

// swapHosts installs hs; hosts of the old set that are not in hs close
// their idle connections (in-flight requests finish on theirs).
func (c *Cluster) swapHosts(hs *HostSet) {
	old := c.hosts.Load()
	c.hosts.Store(hs)
	c.Stats.MembershipTotal.Set(int64(len(hs.All)))
	c.Stats.MembershipHealthy.Set(int64(hs.healthy))
	if old == nil {
		return
	}
	keep := make(map[*Host]bool, len(hs.All))
	for _, h := range hs.All {
		keep[h] = true
	}
	for _, h := range old.All {
		if !keep[h] {
			h.removed.Store(true)
			h.closePools()
			if c.outlier != nil {
				c.outlier.left(h)
			}
		}
	}
}

// CodecFor returns the codec for a request; h2 says it arrived over
// HTTP/2 (for use_downstream_protocol_config).
func (c *Cluster) CodecFor(h2 bool) *protocol.Codec {
	if c.Downstream && h2 {
		return c.H2
	}
	return c.Codec
}

// TLSReady reports whether the cluster's transport sockets have their
// secrets (always, without TLS).
func (c *Cluster) TLSReady() bool {
	_, waiting := c.secretsWait()
	return !waiting
}

// CodecForHost is CodecFor for a request going to h: with auto_config,
// the protocol ALPN chose for h (HTTP/1.1 until one is known).
func (c *Cluster) CodecForHost(h *Host, h2 bool) *protocol.Codec {
	if c.Auto {
		if h.proto.Load() == protoH2 {
			return c.H2
		}
		return c.Codec
	}
	return c.CodecFor(h2)
}

func (c *Cluster) newHost(addr string, weight uint32, hostname string, sock *hostSocket) *Host {
	if sock == nil {
		sock = c.defSocket
	}
	if sock == nil { // a Cluster not made by BuildCluster (tests)
		sock = &hostSocket{}
	}
	if sock.matched != nil {
		sock.matched.Inc()
	}
	h := &Host{Addr: addr, Hostname: hostname, cluster: c, sock: sock}
	h.weight.Store(weight)
	h.pool = &Pool{host: h}
	mc := c.CodecFor(true)
	if c.Auto {
		mc = c.H2
	}
	if mc != nil && mc.NewMux != nil {
		h.mux = newMuxPool(h, mc, c.Mux, alpnH2)
	}
	return h
}

// BuildCluster validates cl and builds it. Errors name the field inside
// the cluster; the caller prefixes the cluster's own path.
func BuildCluster(cl *clusterv3.Cluster, sc *stats.Scope, log *slog.Logger) (*Cluster, error) {
	return BuildClusterWith(cl, sc, log, Env{})
}

// Env is what building a cluster may use beyond its config.
type Env struct {
	// Secrets is the store its transport socket may name secrets from.
	Secrets transport.SecretSource
	// Node is this proxy's node (its upstream filters tell peers who it
	// is).
	Node *corev3.Node
}

// BuildClusterWith is BuildCluster in env.
func BuildClusterWith(cl *clusterv3.Cluster, sc *stats.Scope, log *slog.Logger, env Env) (*Cluster, error) {
	secrets := env.Secrets
	if errs := config.ValidationErrors(cl.ValidateAll()); len(errs) > 0 {
		return nil, config.Join(errs)
	}
	cl, err := upgradeCluster(cl, log)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Name:           cl.GetName(),
		StatName:       cmp.Or(cl.GetAltStatName(), cl.GetName()),
		ConnectTimeout: 5 * time.Second,
		IdleTimeout:    time.Hour,
		BufferLimit:    1 << 20,
		Protocol:       "http1",
		stopped:        make(chan struct{}),
		log:            log.With("cluster", cl.GetName()),
	}
	if cl.GetConnectTimeout() != nil {
		c.ConnectTimeout = cl.GetConnectTimeout().AsDuration()
	}
	if v := cl.GetPerConnectionBufferLimitBytes(); v != nil {
		c.BufferLimit = int(v.GetValue())
	}
	if v := cl.GetMaxRequestsPerConnection(); v != nil {
		c.MaxRequestsPerConn = int(v.GetValue())
	}
	if err := unsupportedClusterFields(cl); err != nil {
		return nil, err
	}
	if c.RPC, err = rpcOptions(cl); err != nil {
		return nil, err
	}
	if b := cl.GetUpstreamBindConfig(); b != nil {
		if c.source, err = bindSource(b); err != nil {
			return nil, config.At("upstream_bind_config", err)
		}
	}
	c.statsScope = sc.Scope("cluster", "envoy_cluster_name", c.StatName)
	if err := c.buildSockets(cl, &transport.BuildContext{Log: log, Secrets: secrets, Stats: c.statsScope}); err != nil {
		return nil, err
	}
	if err := supported.Check(cl); err != nil {
		return nil, err
	}
	if err := c.protocolOptions(cl); err != nil {
		return nil, err
	}
	codec, err := protocol.Get(c.Protocol)
	if err != nil {
		return nil, err
	}
	c.Codec = codec
	if c.Downstream || c.Auto {
		if c.H2, err = protocol.Get("http2"); err != nil {
			return nil, err
		}
	}
	c.Breaker = buildBreaker(cl.GetCircuitBreakers())
	lbPolicy := cl.GetLbPolicy()
	if origDst := cl.GetType() == clusterv3.Cluster_ORIGINAL_DST; origDst != (lbPolicy == clusterv3.Cluster_CLUSTER_PROVIDED) {
		if origDst {
			return nil, config.At("lb_policy", fmt.Errorf("an ORIGINAL_DST cluster needs CLUSTER_PROVIDED, got %s", lbPolicy))
		}
		return nil, config.At("lb_policy", fmt.Errorf("CLUSTER_PROVIDED is only for type ORIGINAL_DST"))
	} else if origDst {
		lbPolicy = clusterv3.Cluster_ROUND_ROBIN // unused: the cluster picks its hosts
	}
	lbName, err := lbPolicyName(lbPolicy)
	if err != nil {
		return nil, config.At("lb_policy", err)
	}
	ext, ok := config.ByName(config.LoadBalancer, lbName)
	if !ok {
		return nil, config.At("lb_policy", fmt.Errorf("load balancer %q is not compiled in", lbName))
	}
	c.LBName = lbName
	c.lb = ext.Factory.(LBFactory)()
	c.Stats = newClusterStats(c.statsScope)
	c.countMatches(c.statsScope)
	c.localityWeighted = localityWeighted(cl)
	c.metadata = cl.GetMetadata()
	if err := c.buildConnFilters(cl, env); err != nil {
		return nil, err
	}
	if od := cl.GetOutlierDetection(); od != nil {
		cfg, err := buildOutlierConfig(od)
		if err != nil {
			return nil, config.At("outlier_detection", err)
		}
		c.outlier = newOutlierDetector(c, cfg)
	}
	c.panicThreshold = defaultPanicThreshold
	if v := cl.GetCommonLbConfig().GetHealthyPanicThreshold(); v != nil {
		c.panicThreshold = min(100, math.Round(v.GetValue())) // validated >= 0; Envoy rounds it
	}
	switch cl.GetType() {
	case clusterv3.Cluster_STATIC:
		if err := c.staticHosts(cl); err != nil {
			return nil, err
		}
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		eps, err := endpoints(cl)
		if err != nil {
			return nil, err
		}
		c.setHosts(nil)
		c.dns = newDNSResolver(c, eps, dnsRefresh(cl), dnsFamily(cl.GetDnsLookupFamily()))
		if err := c.dns.configure(cl); err != nil {
			return nil, err
		}
	case clusterv3.Cluster_EDS:
		if cl.GetLoadAssignment() != nil {
			return nil, config.At("load_assignment", fmt.Errorf("an EDS cluster takes its endpoints from EDS"))
		}
		ec := cl.GetEdsClusterConfig()
		if ec.GetEdsConfig().GetAds() == nil && ec.GetEdsConfig().GetApiConfigSource() == nil {
			return nil, config.At("eds_cluster_config.eds_config", fmt.Errorf("give ads: {} or an api_config_source"))
		}
		c.EDSSource = ec.GetEdsConfig()
		c.EDSName = ec.GetServiceName()
		if c.EDSName == "" {
			c.EDSName = c.Name
		}
		c.EDSFetchTimeout = 15 * time.Second
		if d := ec.GetEdsConfig().GetInitialFetchTimeout(); d != nil {
			c.EDSFetchTimeout = d.AsDuration()
		}
		c.setHosts(nil)
	case clusterv3.Cluster_ORIGINAL_DST:
		if err := c.buildOriginalDst(cl); err != nil {
			return nil, err
		}
	default:
		return nil, config.At("type", fmt.Errorf("cluster type %s is not supported yet (supported: STATIC, STRICT_DNS, LOGICAL_DNS, EDS, ORIGINAL_DST)", cl.GetType()))
	}
	if c.outlier != nil {
		go c.outlier.run() // until Stop
	}
	if c.origDst != nil {
		go c.origDst.sweep() // until Stop
	}
	return c, nil
}

// Resolves reports whether the cluster's hosts come from DNS.
func (c *Cluster) Resolves() bool { return c.dns != nil }

// Start begins DNS resolution for DNS clusters; it waits for the first
// answer up to ctx's deadline so that a fresh config serves at once.
func (c *Cluster) Start(ctx context.Context) {
	if c.dns != nil {
		c.dns.start(ctx)
	}
}

func unsupportedClusterFields(cl *clusterv3.Cluster) error {
	switch {
	case len(cl.GetHealthChecks()) > 0:
		return config.At("health_checks", fmt.Errorf("active health checking is not supported yet"))
	case cl.GetEdsClusterConfig() != nil && cl.GetType() != clusterv3.Cluster_EDS:
		return config.At("eds_cluster_config", fmt.Errorf("only for type EDS"))
	case (cl.GetCleanupInterval() != nil || cl.GetOriginalDstLbConfig() != nil) && cl.GetType() != clusterv3.Cluster_ORIGINAL_DST:
		return config.At(cmp.Or(map[bool]string{true: "cleanup_interval"}[cl.GetCleanupInterval() != nil], "original_dst_lb_config"), fmt.Errorf("only for type ORIGINAL_DST"))
	case cl.GetLoadBalancingPolicy() != nil:
		return config.At("load_balancing_policy", fmt.Errorf("not supported yet: use lb_policy"))
	}
	return nil
}

func (c *Cluster) protocolOptions(cl *clusterv3.Cluster) error {
	for key, anyCfg := range cl.GetTypedExtensionProtocolOptions() {
		path := fmt.Sprintf("typed_extension_protocol_options[%s]", key)
		if key != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
			return config.At(path, fmt.Errorf("unsupported protocol options %q", key))
		}
		var po httpv3.HttpProtocolOptions
		if err := anyCfg.UnmarshalTo(&po); err != nil {
			return config.At(path, err)
		}
		if errs := config.ValidationErrors(po.ValidateAll()); len(errs) > 0 {
			return config.At(path, config.Join(errs))
		}
		if err := supported.Check(&po); err != nil {
			return config.At(path, err)
		}
		if a := po.GetAutoConfig(); a != nil {
			if !c.allTLS() {
				return config.At(path+".auto_config", fmt.Errorf("chooses the protocol by ALPN: needs a TLS transport_socket (and TLS in every transport_socket_matches entry)"))
			}
			c.Auto = true
			c.mux(a.GetHttp2ProtocolOptions())
		}
		if e := po.GetExplicitHttpConfig(); e.GetHttp2ProtocolOptions() != nil {
			c.Protocol = "http2"
			c.mux(e.GetHttp2ProtocolOptions())
		}
		if d := po.GetUseDownstreamProtocolConfig(); d != nil {
			c.Downstream = true
			c.mux(d.GetHttp2ProtocolOptions())
		}
		if cp := po.GetCommonHttpProtocolOptions(); cp != nil {
			if cp.GetIdleTimeout() != nil {
				c.IdleTimeout = cp.GetIdleTimeout().AsDuration()
			}
			if v := cp.GetMaxRequestsPerConnection(); v != nil {
				c.MaxRequestsPerConn = int(v.GetValue())
			}
		}
	}
	return nil
}

// ApplyHTTP2Options copies what the codec honours of an
// http2_protocol_options (clusters' and the connection manager's alike).
func ApplyHTTP2Options(h *protocol.HTTP2Options, o *corev3.Http2ProtocolOptions) {
	if v := o.GetMaxConcurrentStreams(); v != nil {
		h.MaxConcurrentStreams = v.GetValue()
	}
	if v := o.GetInitialStreamWindowSize(); v != nil {
		h.InitialStreamWindowSize = v.GetValue()
	}
	if v := o.GetInitialConnectionWindowSize(); v != nil {
		h.InitialConnectionWindowSize = v.GetValue()
	}
	if v := o.GetMaxOutboundControlFrames(); v != nil {
		h.MaxOutboundControlFrames = v.GetValue()
	}
	if v := o.GetMaxConsecutiveInboundFramesWithEmptyPayload(); v != nil {
		h.MaxConsecutiveEmptyFrames = max(v.GetValue(), 1)
	}
	if v := o.GetMaxInboundPriorityFramesPerStream(); v != nil {
		h.MaxPriorityFramesPerStream = max(v.GetValue(), 1)
	}
	if v := o.GetMaxInboundWindowUpdateFramesPerDataFrameSent(); v != nil {
		h.MaxWindowUpdatesPerDataFrame = v.GetValue()
	}
}

// mux applies an upstream http2_protocol_options.
func (c *Cluster) mux(o *corev3.Http2ProtocolOptions) {
	ApplyHTTP2Options(&c.Mux.HTTP2, o)
	if ka := o.GetConnectionKeepalive(); ka != nil {
		c.Mux.KeepaliveInterval = ka.GetInterval().AsDuration()
	}
}

func buildBreaker(cb *clusterv3.CircuitBreakers) *Breaker {
	b := &Breaker{MaxConnections: DefaultMaxConnections, MaxPendingRequests: DefaultMaxPendingRequests,
		MaxRequests: DefaultMaxRequests, MaxRetries: DefaultMaxRetries}
	for _, t := range cb.GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if v := t.GetMaxConnections(); v != nil {
			b.MaxConnections = int64(v.GetValue())
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			b.MaxPendingRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRequests(); v != nil {
			b.MaxRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRetries(); v != nil {
			b.MaxRetries = int64(v.GetValue())
		}
	}
	return b
}

func lbPolicyName(p clusterv3.Cluster_LbPolicy) (string, error) {
	switch p {
	case clusterv3.Cluster_ROUND_ROBIN:
		return "envoy.load_balancing_policies.round_robin", nil
	case clusterv3.Cluster_LEAST_REQUEST:
		return "envoy.load_balancing_policies.least_request", nil
	case clusterv3.Cluster_RANDOM:
		return "envoy.load_balancing_policies.random", nil
	}
	return "", fmt.Errorf("%s is not supported yet (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM)", p)
}

type endpoint struct {
	path     string
	host     string
	port     int
	weight   uint32
	hostname string
	md       *corev3.Metadata
}

func endpoints(cl *clusterv3.Cluster) ([]endpoint, error) {
	var out []endpoint
	for i, le := range cl.GetLoadAssignment().GetEndpoints() {
		for j, lb := range le.GetLbEndpoints() {
			path := fmt.Sprintf("load_assignment.endpoints[%d].lb_endpoints[%d]", i, j)
			hs := lb.GetHealthStatus()
			if hs == corev3.HealthStatus_UNHEALTHY || hs == corev3.HealthStatus_DRAINING {
				continue
			}
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, config.At(path+".endpoint.address", fmt.Errorf("a socket_address is required"))
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return nil, config.At(path+".endpoint.address.socket_address.protocol", fmt.Errorf("only TCP is supported"))
			}
			w := uint32(1)
			if v := lb.GetLoadBalancingWeight(); v != nil {
				w = v.GetValue()
			}
			out = append(out, endpoint{path: path, host: sa.GetAddress(), port: int(sa.GetPortValue()), weight: w,
				hostname: lb.GetEndpoint().GetHostname(), md: lb.GetMetadata()})
		}
	}
	return out, nil
}

// staticHosts takes a STATIC cluster's endpoints (IP addresses) from its
// load_assignment, priorities and locality weights included.
func (c *Cluster) staticHosts(cl *clusterv3.Cluster) error {
	cla := cl.GetLoadAssignment()
	levels, factor, err := parseAssignment(cla, c.localityWeighted)
	if err != nil {
		return config.At("load_assignment", err)
	}
	for i, le := range cla.GetEndpoints() {
		for j, lb := range le.GetLbEndpoints() {
			if a := lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress(); net.ParseIP(a) == nil {
				return config.At(fmt.Sprintf("load_assignment.endpoints[%d].lb_endpoints[%d]", i, j),
					fmt.Errorf("STATIC cluster needs an IP address, got %q (use type STRICT_DNS for names)", a))
			}
		}
	}
	c.assign(levels, factor)
	return nil
}

func dnsRefresh(cl *clusterv3.Cluster) time.Duration {
	if d := cl.GetDnsRefreshRate(); d != nil {
		return d.AsDuration()
	}
	return 5 * time.Second
}

func dnsFamily(f clusterv3.Cluster_DnsLookupFamily) string {
	switch f {
	case clusterv3.Cluster_V4_ONLY, clusterv3.Cluster_V4_PREFERRED:
		return "ip4"
	case clusterv3.Cluster_V6_ONLY:
		return "ip6"
	}
	return "ip"
}

// bindSource is the local address of upstream_bind_config's
// source_address: an IP address, and a port (0: any).
func bindSource(b *corev3.BindConfig) (net.Addr, error) {
	sa := b.GetSourceAddress()
	if sa == nil {
		return nil, config.At("source_address", fmt.Errorf("required"))
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return nil, config.At("source_address.protocol", fmt.Errorf("only TCP is supported"))
	}
	ip := net.ParseIP(sa.GetAddress())
	if ip == nil {
		return nil, config.At("source_address.address", fmt.Errorf("%q is not an IP address", sa.GetAddress()))
	}
	return &net.TCPAddr{IP: ip, Port: int(sa.GetPortValue())}, nil
}
