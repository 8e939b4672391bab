package dubboproxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/rpc"
	"github.com/straitproxy/strait/stats"
)

func call(svc, method string) *protocol.Headers {
	var h protocol.Headers
	h.Set(protocol.Authority, svc)
	h.Set(rpc.MethodHeader, method)
	return &h
}

// TestCallStatsBounded: clients choose service and method names, so past
// maxMethods pairs, and for overlong names, calls count under "other".
func TestCallStatsBounded(t *testing.T) {
	st := stats.NewStore()
	c := newCallStats(st.Root().Scope("dubbo", "envoy_dubbo_prefix", "in"))
	for i := 0; i < maxMethods+5; i++ {
		c.StreamDone(call("a.B", fmt.Sprintf("m%d", i)), 200, false, time.Millisecond)
	}
	c.StreamDone(call(strings.Repeat("x", maxNameLen), "m"), 503, false, time.Millisecond)
	c.StreamDone(call("a.B", "m0"), 200, true, time.Millisecond)
	for name, want := range map[string]int64{
		"dubbo.in.request": maxMethods + 7, "dubbo.in.response_error": 1, "dubbo.in.response_business_exception": 1,
		"dubbo.in.service.a.B.method.m0.request": 2, "dubbo.in.service.a.B.method.m0.response_business_exception": 1,
		"dubbo.in.service.other.method.other.request": 6, "dubbo.in.service.other.method.other.response_error": 1,
	} {
		if got, _ := st.Lookup(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	if _, ok := st.Lookup(fmt.Sprintf("dubbo.in.service.a.B.method.m%d.request", maxMethods)); ok {
		t.Errorf("a pair past the bound got its own counters")
	}
	h := call("a.B", "m1")
	if n := testing.AllocsPerRun(100, func() { c.StreamDone(h, 200, false, time.Millisecond) }); n != 0 {
		t.Errorf("a known method's call allocates %v times", n)
	}
}
