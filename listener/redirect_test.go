package listener

import (
	"net"
	"strconv"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestDirectoryLookup(t *testing.T) {
	d := NewDirectory()
	exact := &Listener{Name: "exact", addr: "10.0.0.1:80"}
	any4 := &Listener{Name: "any4", addr: "0.0.0.0:80"}
	any6 := &Listener{Name: "any6", addr: "[::]:443"}
	for _, l := range []*Listener{exact, any4, any6} {
		d.add(l)
	}
	for addr, want := range map[string]*Listener{
		"10.0.0.1:80": exact, "10.0.0.2:80": any4, "[fd00::1]:443": any6, "10.0.0.1:81": nil, "[fd00::1]:80": nil,
	} {
		a, _ := net.ResolveTCPAddr("tcp", addr)
		if got := d.Lookup(a); got != want {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
	// A listener that left no longer answers; one that replaced it stays.
	other := &Listener{Name: "other", addr: "10.0.0.1:80"}
	d.add(other)
	d.remove(exact)
	if got := d.Lookup(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 80}); got != other {
		t.Errorf("after the replacement: %v", got)
	}
	var none *Directory
	if none.Lookup(&net.TCPAddr{}) != nil {
		t.Error("a nil directory found a listener")
	}
}

func TestFilterDisabledPredicate(t *testing.T) {
	build := func(js string) predicate {
		var p listenerv3.ListenerFilterChainMatchPredicate
		if err := protojson.Unmarshal([]byte(js), &p); err != nil {
			t.Fatal(err)
		}
		f, err := buildPredicate(&p)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	port := func(n int) *net.TCPAddr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: n} }
	r := func(a, b int) string {
		return `{"destination_port_range":{"start":` + itoa(a) + `,"end":` + itoa(b) + `}}`
	}
	for _, tc := range []struct {
		js   string
		port int
		want bool
	}{
		{r(80, 81), 80, true}, {r(80, 81), 81, false}, // end is exclusive
		{`{"or_match":{"rules":[` + r(1, 2) + `,` + r(80, 81) + `]}}`, 80, true},
		{`{"or_match":{"rules":[` + r(1, 2) + `,` + r(80, 81) + `]}}`, 90, false},
		{`{"and_match":{"rules":[` + r(1, 100) + `,` + r(50, 60) + `]}}`, 55, true},
		{`{"and_match":{"rules":[` + r(1, 100) + `,` + r(50, 60) + `]}}`, 70, false},
		{`{"not_match":` + r(80, 81) + `}`, 80, false},
		{`{"any_match":true}`, 1, true},
	} {
		if got := build(tc.js)(port(tc.port)); got != tc.want {
			t.Errorf("%s on %d: %v", tc.js, tc.port, got)
		}
	}
	var empty listenerv3.ListenerFilterChainMatchPredicate
	if _, err := buildPredicate(&empty); err == nil {
		t.Error("a predicate without a rule was accepted")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
