package upstream

import (
	"fmt"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	caresv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/cares/v3"
	"github.com/straitproxy/strait/config"
)

// resolvConfPath is where the system's resolver settings are read.
var resolvConfPath = "/etc/resolv.conf"

// hostsPath is the hosts file read before the name servers are asked.
var hostsPath = "/etc/hosts"

var caresSupported = config.NewSupport(map[string]string{
	"envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig": `resolvers
		use_resolvers_as_fallback dns_resolver_options udp_max_queries query_timeout_seconds
		query_tries rotate_nameservers`,
	"envoy.config.core.v3.DnsResolverOptions": `use_tcp_for_dns_lookups no_default_search_domain`,
	"envoy.config.core.v3.Address":            `socket_address`,
	"envoy.config.core.v3.SocketAddress":      `address port_value protocol`,
})

// configure reads a DNS cluster's respect_dns_ttl, dns_jitter and typed_dns_resolver_config (the c-ares resolver's
// settings: its resolvers, or the system's with use_resolvers_as_fallback,
// TCP, the search list, per-query timeout and tries, rotation).
func (d *dnsResolver) configure(cl *clusterv3.Cluster) error {
	d.respectTTL = cl.GetRespectDnsTtl()
	if v := cl.GetDnsJitter(); v != nil {
		d.jitter = v.AsDuration()
	}
	tc := cl.GetTypedDnsResolverConfig()
	if tc == nil && !d.respectTTL {
		return nil // the system resolver will do: no TTL is needed
	}
	servers, search, ndots := resolvConf(resolvConfPath)
	c := &dnsClient{servers: servers, search: search, ndots: ndots, timeout: 5 * time.Second, tries: 4, hostsFile: hostsPath}
	if tc != nil {
		var cares caresv3.CaresDnsResolverConfig
		path := "typed_dns_resolver_config.typed_config"
		if tc.GetTypedConfig().MessageName() != cares.ProtoReflect().Descriptor().FullName() {
			return config.At(path, fmt.Errorf("%q is not supported (supported: the c-ares resolver, %s)",
				tc.GetTypedConfig().GetTypeUrl(), cares.ProtoReflect().Descriptor().FullName()))
		}
		if err := tc.GetTypedConfig().UnmarshalTo(&cares); err != nil {
			return config.At(path, err)
		}
		if errs := config.ValidationErrors(cares.ValidateAll()); len(errs) > 0 {
			return config.At(path, config.Join(errs))
		}
		if err := caresSupported.Check(&cares); err != nil {
			return config.At(path, err)
		}
		var own []string
		for i, a := range cares.GetResolvers() {
			sa := a.GetSocketAddress()
			ip := net.ParseIP(sa.GetAddress())
			if ip == nil {
				return config.At(fmt.Sprintf("%s.resolvers[%d].socket_address.address", path, i), fmt.Errorf("must be an IP address"))
			}
			port := int(sa.GetPortValue())
			if port == 0 {
				port = 53
			}
			own = append(own, net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		}
		if len(own) > 0 && (!cares.GetUseResolversAsFallback() || len(c.servers) == 0) {
			c.servers = own
		}
		o := cares.GetDnsResolverOptions()
		c.tcp, c.noSearch = o.GetUseTcpForDnsLookups(), o.GetNoDefaultSearchDomain()
		if v := cares.GetQueryTimeoutSeconds(); v != nil {
			c.timeout = time.Duration(v.GetValue()) * time.Second
		}
		if v := cares.GetQueryTries(); v != nil {
			c.tries = int(v.GetValue())
		}
		c.rotate = cares.GetRotateNameservers()
	}
	d.client = c
	return nil
}
