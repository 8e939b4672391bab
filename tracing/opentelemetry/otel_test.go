package opentelemetry

import (
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/protocol"
)

// TestParseParent: hostile and malformed traceparents are refused, never
// half-read.
func TestParseParent(t *testing.T) {
	good := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if tr, p, smp, ok := parseParent(good); !ok || !smp || len(tr) != 16 || len(p) != 8 {
		t.Fatalf("good: %x %x %v %v", tr, p, smp, ok)
	}
	for _, bad := range []string{"", "-", "00", "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-x1", strings.Repeat("-", 1000)} {
		if _, _, _, ok := parseParent(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseParent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future")
	f.Fuzz(func(t *testing.T, s string) {
		tr, p, _, ok := parseParent(s)
		if ok && (len(tr) != 16 || len(p) != 8 || isZero(tr) || isZero(p)) {
			t.Fatalf("%q: trace %x parent %x", s, tr, p)
		}
	})
}

// BenchmarkStartUnsampled: a request the connection manager does not
// trace still goes through the tracer (its context, marked not sampled,
// goes upstream); that costs no allocation.
func BenchmarkStartUnsampled(b *testing.B) {
	t := &tracer{}
	h := new(protocol.Headers)
	b.ReportAllocs()
	for b.Loop() {
		h.Reset()
		if t.Start(h, time.Time{}, false, false) != nil {
			b.Fatal("a span for an unsampled request")
		}
	}
	if v, _ := h.Get(hParent); len(v) != 55 {
		b.Fatalf("traceparent %q", v)
	}
}
