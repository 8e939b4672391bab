package listener

import (
	"net"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/straitproxy/strait/network"
	"google.golang.org/protobuf/encoding/protojson"
)

func match(t *testing.T, js string) *chain {
	var m listenerv3.FilterChainMatch
	if err := protojson.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	c := &chain{}
	if err := c.buildMatch(&m); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestChainSpecificity(t *testing.T) {
	l := &Listener{chains: []*chain{
		match(t, `{}`),
		match(t, `{"destination_port":8080}`),
		match(t, `{"source_prefix_ranges":[{"address_prefix":"10.0.0.0","prefix_len":8}]}`),
		match(t, `{"destination_port":8080,"prefix_ranges":[{"address_prefix":"127.0.0.1","prefix_len":32}]}`),
	}}
	for i, c := range l.chains {
		c.name = string(rune('a' + i))
	}
	tests := []struct {
		name          string
		local, remote string
		want          string
	}{
		{"catch-all", "127.0.0.1:9000", "127.0.0.1:5000", "a"},
		{"port", "127.0.0.2:8080", "127.0.0.1:5000", "b"},
		{"port and prefix", "127.0.0.1:8080", "127.0.0.1:5000", "d"},
		{"source prefix", "127.0.0.1:9000", "10.1.2.3:5000", "c"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			local, _ := net.ResolveTCPAddr("tcp", tc.local)
			remote, _ := net.ResolveTCPAddr("tcp", tc.remote)
			best := l.matchConn(&connKey{local: local, remote: remote})
			if best == nil || best.name != tc.want {
				t.Fatalf("matched %v, want %s", best, tc.want)
			}
		})
	}
}

// TestChainMatchOrder: server names (exact, then the longest wildcard,
// then none), transport protocol and ALPN, level by level as Envoy
// orders them, with no going back to a less specific level.
func TestChainMatchOrder(t *testing.T) {
	chains := []*chain{
		match(t, `{"server_names":["www.example.com"]}`),
		match(t, `{"server_names":["*.example.com"]}`),
		match(t, `{"server_names":["*.b.example.com"],"transport_protocol":"tls"}`),
		match(t, `{"transport_protocol":"tls"}`),
		match(t, `{}`),
		match(t, `{"application_protocols":["h2c"]}`),
		match(t, `{"server_names":["alpn.example"],"application_protocols":["h2"]}`),
		match(t, `{"server_names":["alpn.example"],"application_protocols":["http/1.1"]}`),
	}
	for i, c := range chains {
		c.name = string(rune('a' + i))
	}
	local, _ := net.ResolveTCPAddr("tcp", "127.0.0.1:443")
	tests := []struct {
		sni, tp string
		alpn    []string
		want    string
	}{
		{"www.example.com", "tls", nil, "a"},
		{"x.example.com", "tls", nil, "b"},
		{"x.y.example.com", "tls", nil, "b"},
		{"x.b.example.com", "tls", nil, "c"},
		{"x.b.example.com", "raw_buffer", nil, "-"}, // most specific name, wrong transport: no fallback
		{"example.com", "tls", nil, "d"},
		{"", "tls", nil, "d"},
		{"", "raw_buffer", nil, "e"},
		{"", "raw_buffer", []string{"h2c"}, "f"},
		{"alpn.example", "tls", []string{"h2", "http/1.1"}, "g"},
		{"alpn.example", "tls", []string{"http/1.1"}, "h"},
		{"alpn.example", "tls", []string{"spdy/3"}, "-"},
	}
	for _, tc := range tests {
		k := &connKey{local: local, info: &network.ConnInfo{ServerName: tc.sni, TransportProtocol: tc.tp, ApplicationProtocols: tc.alpn}}
		got := "-"
		if c := matchChain(chains, k); c != nil {
			got = c.name
		}
		if got != tc.want {
			t.Errorf("%+v: chain %s, want %s", tc, got, tc.want)
		}
	}
}

func TestChainMatchRefused(t *testing.T) {
	for _, js := range []string{`{"server_names":["a.*.com"]}`, `{"server_names":["*"]}`, `{"server_names":["*.a*.com"]}`} {
		var m listenerv3.FilterChainMatch
		protojson.Unmarshal([]byte(js), &m)
		if err := (&chain{}).buildMatch(&m); err == nil {
			t.Errorf("%s accepted", js)
		}
	}
	dup := []*chain{match(t, `{"server_names":["a.com","b.com"]}`), match(t, `{"server_names":["b.com"],"transport_protocol":""}`)}
	if err := uniqueMatches(dup); err == nil {
		t.Error("two chains matching b.com alike accepted")
	}
	ok := []*chain{match(t, `{"server_names":["a.com"]}`), match(t, `{"server_names":["a.com"],"transport_protocol":"tls"}`), match(t, `{}`)}
	if err := uniqueMatches(ok); err != nil {
		t.Error(err)
	}
}
