package upstream

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsClient asks name servers itself (RFC 1035 over UDP, over TCP when an
// answer is truncated or use_tcp_for_dns_lookups says so), so that answers
// come with their TTLs (respect_dns_ttl) and a cluster can name its own
// resolvers (typed_dns_resolver_config, the c-ares resolver's fields). Each
// query has a socket of its own, so c-ares's udp_max_queries always holds.
type dnsClient struct {
	servers  []string // "ip:port"
	search   []string
	ndots    int
	tcp      bool
	timeout  time.Duration // per query
	tries    int           // rounds over the servers
	rotate   bool
	next     atomic.Uint32
	noSearch bool
	// hostsFile is read before any server is asked, as c-ares does
	// ("/etc/hosts"; "" for none).
	hostsFile string
}

// fromHosts returns the addresses of family a hosts file gives name
// (case-insensitive; nil when it gives none). The file is read at each
// lookup: lookups are as rare as DNS refreshes.
func fromHosts(path, name, family string) []net.IP {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	name = strings.TrimSuffix(name, ".")
	var ips []net.IP
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		ip := net.ParseIP(fields[0])
		if ip == nil || family == "ip4" && ip.To4() == nil || family == "ip6" && ip.To4() != nil {
			continue
		}
		for _, n := range fields[1:] {
			if strings.EqualFold(strings.TrimSuffix(n, "."), name) {
				ips = append(ips, ip)
				break
			}
		}
	}
	return ips
}

// resolvConf reads the system's name servers, search list and ndots (the
// libc defaults when the file says nothing).
func resolvConf(path string) (servers, search []string, ndots int) {
	ndots = 1
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, ndots
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if ip := net.ParseIP(fields[1]); ip != nil {
				servers = append(servers, net.JoinHostPort(ip.String(), "53"))
			}
		case "search", "domain":
			search = fields[1:]
		case "options":
			for _, o := range fields[1:] {
				if v, ok := strings.CutPrefix(o, "ndots:"); ok {
					if n, err := strconv.Atoi(v); err == nil {
						ndots = min(max(n, 0), 15)
					}
				}
			}
		}
	}
	return servers, search, ndots
}

// names are the fully qualified names to try for name, in order (the
// search list before the name itself when it has fewer dots than ndots).
func (d *dnsClient) names(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	var out []string
	if !d.noSearch {
		for _, s := range d.search {
			out = append(out, name+"."+strings.TrimSuffix(s, ".")+".")
		}
	}
	if strings.Count(name, ".") >= d.ndots {
		return append([]string{name + "."}, out...)
	}
	return append(out, name+".")
}

// errNoRecords: no server had an address for any of the names.
var errNoRecords = errors.New("no such host")

// lookup resolves name to addresses of family ("ip4", "ip6", "ip": both)
// and the shortest TTL among the records of the answer.
func (d *dnsClient) lookup(ctx context.Context, name, family string) ([]net.IP, time.Duration, error) {
	if ips := fromHosts(d.hostsFile, name, family); len(ips) > 0 {
		return ips, -1, nil // no TTL: the refresh rate applies
	}
	var types []dnsmessage.Type
	if family != "ip6" {
		types = append(types, dnsmessage.TypeA)
	}
	if family != "ip4" {
		types = append(types, dnsmessage.TypeAAAA)
	}
	var lastErr error = errNoRecords
	for _, fqdn := range d.names(name) {
		var ips []net.IP
		ttl := time.Duration(-1)
		for _, t := range types {
			got, t2, err := d.query(ctx, fqdn, t)
			if err != nil {
				lastErr = err
				continue
			}
			ips = append(ips, got...)
			if len(got) > 0 && (ttl < 0 || t2 < ttl) {
				ttl = t2
			}
		}
		if len(ips) > 0 {
			return ips, ttl, nil
		}
	}
	return nil, 0, fmt.Errorf("lookup %s: %w", name, lastErr)
}

// query asks the servers, tries rounds over them, for one name and type.
func (d *dnsClient) query(ctx context.Context, fqdn string, t dnsmessage.Type) ([]net.IP, time.Duration, error) {
	qname, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return nil, 0, err
	}
	if len(d.servers) == 0 {
		return nil, 0, errors.New("no name servers")
	}
	start := 0
	if d.rotate {
		start = int(d.next.Add(1))
	}
	var lastErr error
	for try := 0; try < d.tries; try++ {
		for i := range d.servers {
			srv := d.servers[(start+i)%len(d.servers)]
			ips, ttl, err := d.ask(ctx, srv, qname, t)
			if err == nil || errors.Is(err, errNoRecords) {
				return ips, ttl, err
			}
			lastErr = err
			if ctx.Err() != nil {
				return nil, 0, ctx.Err()
			}
		}
	}
	return nil, 0, lastErr
}

// ask sends one question to one server: UDP first (unless tcp), then TCP
// if the answer was truncated.
func (d *dnsClient) ask(ctx context.Context, srv string, qname dnsmessage.Name, t dnsmessage.Type) ([]net.IP, time.Duration, error) {
	id := uint16(rand.Uint32())
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: qname, Type: t, Class: dnsmessage.ClassINET}},
	}
	q, err := msg.Pack()
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	useTCP := d.tcp
	for {
		var answer []byte
		if useTCP {
			answer, err = exchangeTCP(ctx, srv, q)
		} else {
			answer, err = exchangeUDP(ctx, srv, q, id)
		}
		if err != nil {
			return nil, 0, err
		}
		ips, ttl, truncated, err := parseAnswer(answer, id, t)
		if truncated && !useTCP {
			useTCP = true
			continue
		}
		return ips, ttl, err
	}
}

func exchangeUDP(ctx context.Context, srv string, q []byte, id uint16) ([]byte, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "udp", srv)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 1232)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if n >= 2 && binary.BigEndian.Uint16(buf) == id {
			return buf[:n], nil
		}
		// (A stray datagram: keep waiting for ours.)
	}
}

func exchangeTCP(ctx context.Context, srv string, q []byte) ([]byte, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", srv)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(q)), uint16(len(q)))
	if _, err := c.Write(append(out, q...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err = io.ReadFull(c, buf)
	return buf, err
}

// parseAnswer reads the addresses of type t in an answer and the shortest
// TTL among its answer records (a CNAME's included).
func parseAnswer(b []byte, id uint16, t dnsmessage.Type) (ips []net.IP, ttl time.Duration, truncated bool, err error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return nil, 0, false, err
	}
	if h.ID != id || !h.Response {
		return nil, 0, false, errors.New("dns: not the answer to this question")
	}
	if h.Truncated {
		return nil, 0, true, nil
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, 0, false, errNoRecords
	default:
		return nil, 0, false, fmt.Errorf("dns: server answered %v", h.RCode)
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, 0, false, err
	}
	min := uint32(0)
	first := true
	for {
		rh, err := p.AnswerHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return nil, 0, false, err
		}
		if first || rh.TTL < min {
			min, first = rh.TTL, false
		}
		switch {
		case rh.Type == t && t == dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return nil, 0, false, err
			}
			ips = append(ips, net.IP(r.A[:]))
		case rh.Type == t && t == dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return nil, 0, false, err
			}
			ips = append(ips, net.IP(r.AAAA[:]))
		default:
			if err := p.SkipAnswer(); err != nil {
				return nil, 0, false, err
			}
		}
	}
	if len(ips) == 0 {
		return nil, 0, false, errNoRecords
	}
	return ips, time.Duration(min) * time.Second, false, nil
}
