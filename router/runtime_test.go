package router

import (
	"testing"

	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestRuntimeFraction: a route's runtime_fraction takes its share of the
// requests that match it, from the runtime value of its key when set
// (a number over the default's denominator, or a fractional percent),
// else from the default; the rest fall through to the next route.
func TestRuntimeFraction(t *testing.T) {
	rt := config.NewRuntime()
	tbl := mustCompile(t, vh(`
  - match: {prefix: "/", runtime_fraction: {runtime_key: split.a, default_value: {numerator: 30}}}
    route: {cluster: a}
  - match: {prefix: "/"}
    route: {cluster: b}
`), Options{Runtime: rt})
	share := func() int {
		n := 0
		for i := uint64(0); i < 1000; i++ {
			if tbl.MatchRandom(request("x", "/"), i*7919).PickCluster(0) == "a" {
				n++
			}
		}
		return n
	}
	layer := func(js string) map[string]config.RuntimeEntry {
		var s structpb.Struct
		if err := s.UnmarshalJSON([]byte(js)); err != nil {
			t.Fatal(err)
		}
		e, err := config.RuntimeEntries(&s)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if n := share(); n != 300 {
		t.Fatalf("default 30%%: %d of 1000", n)
	}
	rt.AddLayer("rtds", "rtds", layer(`{"split": {"a": 80}}`))
	if n := share(); n != 800 {
		t.Fatalf("runtime 80: %d of 1000", n)
	}
	rt.SetLayer("rtds", layer(`{"split.a": {"numerator": 500, "denominator": "TEN_THOUSAND"}}`))
	if n := share(); n < 35 || n > 65 {
		t.Fatalf("runtime 500/10000: %d of 1000", n)
	}
	rt.SetLayer("rtds", nil)
	if n := share(); n != 300 {
		t.Fatalf("back to the default: %d of 1000", n)
	}
}
