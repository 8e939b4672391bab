package fault

import (
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"
)

func parse(t *testing.T, y string) *structpb.Struct {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatal(err)
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConfig(t *testing.T) {
	for _, c := range []struct{ cfg, err string }{
		{`{stat_prefix: f, delay: {duration: 250ms}}`, ""},
		{`{stat_prefix: f, delay: {duration: 1s, every_read: true, percent: 12.5}}`, ""},
		{`{stat_prefix: f, abort: {}}`, ""},
		{`{stat_prefix: f, abort: {after_bytes_received: 10, after_bytes_sent: 20, reset: true, percent: 0}}`, ""},
		{`{stat_prefix: f, throttle: {read_bytes_per_second: 1000}}`, ""},
		{`{stat_prefix: f, delay: {duration: 1s}, abort: {after_bytes_sent: 5}, throttle: {write_bytes_per_second: 1}}`, ""},
		{`{delay: {duration: 1s}}`, "stat_prefix: is required"},
		{`{stat_prefix: f}`, "at least one of delay, abort and throttle"},
		{`{stat_prefix: f, delay: {}}`, `delay.duration: "" is not a positive duration`},
		{`{stat_prefix: f, delay: {duration: -1s}}`, `delay.duration: "-1s" is not a positive duration`},
		{`{stat_prefix: f, delay: {duration: 1s, percent: 101}}`, "delay.percent: 101 is not a percentage"},
		{`{stat_prefix: f, abort: {percent: -1}}`, "abort.percent: -1 is not a percentage"},
		{`{stat_prefix: f, abort: {after_bytes_received: -5}}`, "must not be negative"},
		{`{stat_prefix: f, throttle: {}}`, "read_bytes_per_second or write_bytes_per_second is required"},
		{`{stat_prefix: f, throttle: {read_bytes_per_second: -1}}`, "rates must not be negative"},
		{`{stat_prefix: f, delay: {duration: 1s, every_reads: true}}`, "every_reads"},
		{`{stat_prefix: f, abort: {reset: yes-please}}`, "reset"},
		{`{stat_prefix: f, bandwidth: {}}`, "bandwidth"},
	} {
		_, err := build(&filter.BuildContext{Stats: stats.NewStore().Root()}, parse(t, c.cfg))
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.cfg, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want %q", c.cfg, err, c.err)
		}
	}
}

// TestBucket: the read side lets a rate's worth through per second and
// says when more may go; the write side's debt is repaid at the rate.
func TestBucket(t *testing.T) {
	t0 := time.Now()
	b := &bucket{rate: 1000, at: t0}
	if wait, n := b.take(500, t0); n != 0 || wait < 10*time.Millisecond {
		t.Fatalf("empty bucket let %d through, wait %v", n, wait)
	}
	// After 50 ms: 50 bytes' worth.
	if _, n := b.take(500, t0.Add(50*time.Millisecond)); n != 50 {
		t.Fatalf("after 50ms: %d bytes", n)
	}
	// Never more than the burst (a tenth of a second) after an idle time.
	if _, n := b.take(500, t0.Add(10*time.Second)); n != 100 {
		t.Fatalf("after idling: %d bytes, want the burst of 100", n)
	}
	w := &bucket{rate: 1000, at: t0}
	if d := w.debt(500, t0); d != 500*time.Millisecond {
		t.Fatalf("debt of 500 bytes at 1000 B/s: wait %v", d)
	}
	if d := w.debt(500, t0.Add(500*time.Millisecond)); d != 500*time.Millisecond {
		t.Fatalf("second debt: wait %v", d)
	}
}
