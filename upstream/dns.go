package upstream

import (
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"time"
)

// dnsResolver re-resolves a STRICT_DNS cluster's names every refresh and
// swaps in the new host set; hosts whose address stays keep their pools.
// With respect_dns_ttl the answers' shortest TTL sets the next refresh (a
// TTL of 0: dns_refresh_rate), as Envoy; dns_jitter adds up to that much
// to each wait.
type dnsResolver struct {
	c       *Cluster
	eps     []endpoint
	refresh time.Duration
	family  string
	lastTTL time.Duration
	// client asks name servers itself (respect_dns_ttl,
	// typed_dns_resolver_config); nil: the system resolver.
	client     *dnsClient
	respectTTL bool
	jitter     time.Duration
}

func newDNSResolver(c *Cluster, eps []endpoint, refresh time.Duration, family string) *dnsResolver {
	return &dnsResolver{c: c, eps: eps, refresh: refresh, family: family}
}

func (d *dnsResolver) start(ctx context.Context) {
	d.lastTTL = d.resolve(ctx)
	go d.loop()
}

// next is the wait before the next resolution.
func (d *dnsResolver) next(ttl time.Duration) time.Duration {
	wait := d.refresh
	if d.respectTTL && ttl > 0 {
		wait = ttl
	}
	if d.jitter > 0 {
		wait += rand.N(d.jitter)
	}
	return wait
}

func (d *dnsResolver) loop() {
	t := time.NewTimer(d.next(d.lastTTL))
	defer t.Stop()
	for {
		select {
		case <-d.c.stopped:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(d.refresh, 5*time.Second))
			ttl := d.resolve(ctx)
			cancel()
			t.Reset(d.next(ttl))
		}
	}
}

// lookupIP resolves one name; ttl is -1 when unknown (the system resolver).
func (d *dnsResolver) lookupIP(ctx context.Context, host string) ([]net.IP, time.Duration, error) {
	if d.client != nil {
		return d.client.lookup(ctx, host, d.family)
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, d.family, host)
	return ips, -1, err
}

// resolve looks every name up and installs the hosts; it returns the
// shortest TTL of the answers (-1: none known).
func (d *dnsResolver) resolve(ctx context.Context) time.Duration {
	old := map[string]*Host{}
	if hs := d.c.hosts.Load(); hs != nil {
		for _, h := range hs.All { // ejected hosts too: they keep their state
			old[h.Addr] = h
		}
	}
	var hosts []*Host
	seen := map[string]bool{}
	failed, reweighted := false, false
	minTTL := time.Duration(-1)
	for _, ep := range d.eps {
		sock := d.c.socketFor(ep.md)
		ips, ttl, err := d.lookupIP(ctx, ep.host)
		if err == nil && ttl >= 0 && (minTTL < 0 || ttl < minTTL) {
			minTTL = ttl
		}
		if err != nil {
			d.c.log.Warn("dns resolution failed", "host", ep.host, "err", err)
			failed = true
			continue
		}
		for _, ip := range ips {
			addr := net.JoinHostPort(ip.String(), strconv.Itoa(ep.port))
			if seen[addr] {
				continue
			}
			seen[addr] = true
			if h, ok := old[addr]; ok && h.sock == sock {
				if h.Weight() != ep.weight {
					h.weight.Store(ep.weight)
					reweighted = true
				}
				hosts = append(hosts, h)
				continue
			}
			name := ep.hostname
			if name == "" {
				name = ep.host
			}
			hosts = append(hosts, d.c.newHost(addr, ep.weight, name, sock))
		}
	}
	if failed && len(hosts) == 0 && len(old) > 0 {
		return minTTL // keep the last good answer through a resolver outage
	}
	if reweighted || !sameHosts(d.c.hosts.Load(), hosts) {
		d.c.setHosts(hosts)
	}
	return minTTL
}

func sameHosts(hs *HostSet, hosts []*Host) bool {
	if hs == nil || len(hs.All) != len(hosts) {
		return false
	}
	for i := range hosts {
		if hs.All[i] != hosts[i] {
			return false
		}
	}
	return true
}
