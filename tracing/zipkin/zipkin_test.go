package zipkin

import (
	"testing"
	"time"

	"github.com/straitproxy/strait/protocol"
)

func TestExtract(t *testing.T) {
	hdr := func(kv ...string) *protocol.Headers {
		h := new(protocol.Headers)
		for i := 0; i+1 < len(kv); i += 2 {
			h.AddString(kv[i], kv[i+1])
		}
		return h
	}
	for _, tc := range []struct {
		name                     string
		h                        *protocol.Headers
		trace, span, parent, smp string
		debug                    bool
	}{
		{"multi", hdr("x-b3-traceid", "463AC35C9F6413AD", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-sampled", "true"), "463ac35c9f6413ad", "a2fb4a1d1a96d312", "", "1", false},
		{"single with parent", hdr("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"), "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", "05e3ac9a4f6e3b90", "1", false},
		{"single wins", hdr("b3", "0", "x-b3-traceid", "463ac35c9f6413ad", "x-b3-spanid", "a2fb4a1d1a96d312"), "", "", "", "0", false},
		{"debug", hdr("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-d"), "80f198ee56343ba8", "e457b5a2e4d86bd1", "", "1", true},
		{"flags", hdr("x-b3-traceid", "463ac35c9f6413ad", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-flags", "1"), "463ac35c9f6413ad", "a2fb4a1d1a96d312", "", "", true},
		{"bad ids dropped", hdr("x-b3-traceid", "xyz", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-sampled", "1"), "", "", "", "1", false},
		{"zero id dropped", hdr("x-b3-traceid", "0000000000000000", "x-b3-spanid", "a2fb4a1d1a96d312"), "", "", "", "", false},
	} {
		tr, sp, p, smp, dbg := extract(tc.h)
		if tr != tc.trace || sp != tc.span || p != tc.parent || smp != tc.smp || dbg != tc.debug {
			t.Errorf("%s: %q %q %q %q %v", tc.name, tr, sp, p, smp, dbg)
		}
	}
	for range 100 {
		if id := newID(true); !validID(id, true) || len(id) != 32 {
			t.Fatalf("newID(true) = %q", id)
		}
		if id := newID(false); !validID(id, false) || len(id) != 16 {
			t.Fatalf("newID(false) = %q", id)
		}
	}
}

func FuzzExtract(f *testing.F) {
	f.Add("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90", "463ac35c9f6413ad", "a2fb4a1d1a96d312")
	f.Add("d", "", "")
	f.Fuzz(func(t *testing.T, single, trace, span string) {
		h := new(protocol.Headers)
		if single != "" {
			h.AddString("b3", single)
		}
		h.AddString("x-b3-traceid", trace)
		h.AddString("x-b3-spanid", span)
		tr, sp, p, _, _ := extract(h)
		if tr != "" && (!validID(tr, true) || !validID(sp, false) || p != "" && !validID(p, false)) {
			t.Fatalf("accepted trace %q span %q parent %q", tr, sp, p)
		}
	})
}

// BenchmarkStartUnsampled: a request the connection manager does not
// trace still goes through the tracer (a B3 context marked not sampled
// goes upstream).
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
}
