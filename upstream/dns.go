package upstream

import (
	"context"
	"net"
	"strconv"
	"time"
)

// dnsResolver re-resolves a STRICT_DNS cluster's names every refresh and
// swaps in the new host set; hosts whose address stays keep their pools.
type dnsResolver struct {
	c       *Cluster
	eps     []endpoint
	refresh time.Duration
	family  string
}

func newDNSResolver(c *Cluster, eps []endpoint, refresh time.Duration, family string) *dnsResolver {
	return &dnsResolver{c: c, eps: eps, refresh: refresh, family: family}
}

func (d *dnsResolver) start(ctx context.Context) {
	d.resolve(ctx)
	go d.loop()
}

func (d *dnsResolver) loop() {
	t := time.NewTicker(d.refresh)
	defer t.Stop()
	for {
		select {
		case <-d.c.stopped:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), d.refresh)
			d.resolve(ctx)
			cancel()
		}
	}
}

func (d *dnsResolver) resolve(ctx context.Context) {
	old := map[string]*Host{}
	if hs := d.c.hosts.Load(); hs != nil {
		for _, h := range hs.Hosts {
			old[h.Addr] = h
		}
	}
	var hosts []*Host
	seen := map[string]bool{}
	failed := false
	for _, ep := range d.eps {
		ips, err := net.DefaultResolver.LookupIP(ctx, d.family, ep.host)
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
			if h, ok := old[addr]; ok && h.Weight == ep.weight {
				hosts = append(hosts, h)
				continue
			}
			name := ep.hostname
			if name == "" {
				name = ep.host
			}
			hosts = append(hosts, d.c.newHost(addr, ep.weight, name))
		}
	}
	if failed && len(hosts) == 0 && len(old) > 0 {
		return // keep the last good answer through a resolver outage
	}
	if !sameHosts(d.c.hosts.Load(), hosts) {
		d.c.setHosts(hosts)
	}
}

func sameHosts(hs *HostSet, hosts []*Host) bool {
	if hs == nil || len(hs.Hosts) != len(hosts) {
		return false
	}
	for i := range hosts {
		if hs.Hosts[i] != hosts[i] {
			return false
		}
	}
	return true
}
