package proxy

import (
	"testing"
	"time"

	"github.com/straitproxy/strait/protocol"
)

// TestAppendGRPCTimeout: the finest unit that holds the value in 8
// digits, rounded up; what it writes reads back.
func TestAppendGRPCTimeout(t *testing.T) {
	for d, want := range map[time.Duration]string{
		300 * time.Millisecond:       "300m",
		1500 * time.Microsecond:      "2m",
		99999999 * time.Millisecond:  "99999999m",
		100000000 * time.Millisecond: "100000S",
		2000 * time.Hour:             "7200000S",
		200 * 24 * 365 * time.Hour:   "1752000H",
	} {
		got := string(appendGRPCTimeout(nil, d))
		if got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
		var h protocol.Headers
		h.Set("grpc-timeout", got)
		if back, ok := grpcTimeout(&h); !ok || back < d && d < maxGRPCTimeout {
			t.Errorf("%v: %q reads back as %v, %v", d, got, back, ok)
		}
	}
}
