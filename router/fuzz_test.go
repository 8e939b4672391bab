package router

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/straitproxy/strait/protocol"
	"google.golang.org/protobuf/encoding/protojson"
)

// FuzzCompileAndMatch compiles arbitrary route configurations (JSON) and
// matches arbitrary requests against those that compile: neither may
// panic, and a match must name a route of the table (issue 11, item 15).
func FuzzCompileAndMatch(f *testing.F) {
	f.Add(`{"virtual_hosts":[{"name":"a","domains":["*.example.com","x:80"],"routes":[
	  {"match":{"prefix":"/api","headers":[{"name":"x-v","string_match":{"exact":"1"}}]},"route":{"cluster":"c","prefix_rewrite":"/"}},
	  {"match":{"safe_regex":{"regex":"/u/[0-9]+"}},"route":{"cluster":"c","regex_rewrite":{"pattern":{"regex":"[0-9]+"},"substitution":"n"}}},
	  {"match":{"path":"/r"},"redirect":{"https_redirect":true}},
	  {"match":{"prefix":"/"},"direct_response":{"status":200,"body":{"inline_string":"ok"}}}]}]}`,
		"GET", "a.example.com", "/api/x?q=1", "1")
	f.Add(`{"virtual_hosts":[{"name":"a","domains":["*"],"routes":[{"match":{"prefix":"/","query_parameters":[{"name":"q","present_match":true}]},"route":{"weighted_clusters":{"clusters":[{"name":"a","weight":1},{"name":"b","weight":3}]}}}]}]}`,
		"POST", "h", "/?q", "")
	f.Fuzz(func(t *testing.T, js, method, host, path, hv string) {
		var rc routev3.RouteConfiguration
		if protojson.Unmarshal([]byte(js), &rc) != nil {
			return
		}
		tb, err := Compile(&rc, Options{})
		if err != nil {
			return
		}
		var h protocol.Headers
		h.Set(protocol.Method, method)
		h.Set(protocol.Authority, host)
		h.Set(protocol.Path, path)
		h.Set("x-v", hv)
		for _, rnd := range []uint64{0, 1, 1 << 63} {
			if r := tb.MatchRandom(&h, rnd); r != nil {
				if r.DirectResponse == nil && r.Redirect == nil {
					r.PickCluster(rnd)
				}
			}
		}
	})
}
