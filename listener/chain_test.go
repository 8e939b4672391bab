package listener

import (
	"net"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
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
			best := l.matchAddrs(local, remote)
			if best == nil || best.name != tc.want {
				t.Fatalf("matched %v, want %s", best, tc.want)
			}
		})
	}
}

func TestUnsupportedMatch(t *testing.T) {
	var m listenerv3.FilterChainMatch
	protojson.Unmarshal([]byte(`{"server_names":["a.com"]}`), &m)
	if err := (&chain{}).buildMatch(&m); err == nil {
		t.Fatal("server_names accepted without TLS")
	}
}
