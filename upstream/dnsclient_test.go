package upstream

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// TestDNSClient: answers carry their shortest TTL; the search list is
// tried before a short name and after a long one; a truncated UDP answer
// is asked again over TCP; NXDOMAIN everywhere is an error.
func TestDNSClient(t *testing.T) {
	srv := testutil.StartDNS(t, map[string]testutil.DNSRecord{
		"svc.ns.svc.cluster.local.": {IPs: []string{"127.0.0.2", "127.0.0.3"}, TTL: 7},
		"big.test.":                 {IPs: []string{"127.0.0.4"}, TTL: 30, Truncate: true},
	})
	d := &dnsClient{servers: []string{srv.Addr}, search: []string{"ns.svc.cluster.local", "svc.cluster.local"}, ndots: 5, timeout: time.Second, tries: 2}
	ips, ttl, err := d.lookup(context.Background(), "svc", "ip4")
	if err != nil || len(ips) != 2 || ips[0].String() != "127.0.0.2" || ttl != 7*time.Second {
		t.Fatalf("svc: %v %v %v", ips, ttl, err)
	}
	ips, ttl, err = d.lookup(context.Background(), "big.test", "ip4")
	if err != nil || len(ips) != 1 || ttl != 30*time.Second || srv.TCP.Load() != 1 {
		t.Fatalf("truncated: %v %v %v, %d over TCP", ips, ttl, err, srv.TCP.Load())
	}
	if _, _, err := d.lookup(context.Background(), "nowhere", "ip4"); err == nil {
		t.Fatal("an unknown name resolved")
	}
	// A name with ndots dots is tried as it is first.
	if got := (&dnsClient{search: []string{"a"}, ndots: 1}).names("x.y"); len(got) != 2 || got[0] != "x.y." || got[1] != "x.y.a." {
		t.Fatalf("names: %v", got)
	}
	if got := (&dnsClient{search: []string{"a"}, ndots: 1, noSearch: true}).names("x"); len(got) != 1 || got[0] != "x." {
		t.Fatalf("names without search: %v", got)
	}
}

func TestResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# c\nnameserver 10.0.0.10\nnameserver ::1\nsearch a.svc b\noptions ndots:5 timeout:2\n"), 0o644)
	servers, search, ndots := resolvConf(p)
	if len(servers) != 2 || servers[0] != "10.0.0.10:53" || servers[1] != "[::1]:53" || len(search) != 2 || ndots != 5 {
		t.Fatalf("%v %v %d", servers, search, ndots)
	}
}

// TestDNSClientHostsFile: names in the hosts file resolve from it, by
// family, before any server is asked (as c-ares does), without a TTL.
func TestDNSClientHostsFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(p, []byte("# comment\n127.0.0.1 localhost Local.Test # trailing\n::1 localhost ip6-localhost\n10.1.2.3 other\n"), 0o644)
	d := &dnsClient{servers: []string{"127.0.0.1:1"}, timeout: 50 * time.Millisecond, tries: 1, hostsFile: p}
	for _, tc := range []struct {
		name, family string
		want         []string
	}{
		{"localhost", "ip4", []string{"127.0.0.1"}},
		{"localhost", "ip6", []string{"::1"}},
		{"localhost.", "ip", []string{"127.0.0.1", "::1"}},
		{"local.test", "ip4", []string{"127.0.0.1"}},
	} {
		ips, ttl, err := d.lookup(context.Background(), tc.name, tc.family)
		if err != nil || len(ips) != len(tc.want) || ttl != -1 {
			t.Fatalf("%s %s: %v %v %v", tc.name, tc.family, ips, ttl, err)
		}
		for i, ip := range ips {
			if ip.String() != tc.want[i] {
				t.Errorf("%s %s: %v, want %v", tc.name, tc.family, ips, tc.want)
			}
		}
	}
	if _, _, err := d.lookup(context.Background(), "other", "ip6"); err == nil {
		t.Error("an IPv4 hosts entry answered for ip6")
	}
}
