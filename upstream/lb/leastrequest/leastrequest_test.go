package leastrequest

import (
	"testing"

	"github.com/straitproxy/strait/upstream"
)

func TestPrefersFewerActive(t *testing.T) {
	hs := upstream.NewTestHostSet([]uint32{1, 1})
	hs.Hosts[0].Active.Store(10)
	b := New()
	for r := uint64(0); r < 100; r++ {
		if got := b.Pick(hs, &upstream.PickHint{Random: r}); got != hs.Hosts[1] {
			t.Fatalf("r=%d picked the busier host", r)
		}
	}
}

func TestSpreadsWhenIdle(t *testing.T) {
	hs := upstream.NewTestHostSet([]uint32{1, 1, 1, 1})
	b := New()
	seen := map[*upstream.Host]bool{}
	for r := uint64(0); r < 64; r++ {
		seen[b.Pick(hs, &upstream.PickHint{Random: r * 2654435761})] = true
	}
	if len(seen) != 4 {
		t.Fatalf("only %d of 4 hosts picked", len(seen))
	}
}

func TestAvoid(t *testing.T) {
	hs := upstream.NewTestHostSet([]uint32{1, 1})
	b := New()
	for r := uint64(0); r < 20; r++ {
		if b.Pick(hs, &upstream.PickHint{Random: r, Avoid: hs.Hosts[0]}) == hs.Hosts[0] {
			t.Fatal("picked the avoided host")
		}
	}
}

func BenchmarkPick(b *testing.B) {
	hs := upstream.NewTestHostSet([]uint32{1, 1, 1, 1})
	lb := New()
	hint := &upstream.PickHint{}
	b.ReportAllocs()
	for b.Loop() {
		hint.Random += 0x9e3779b97f4a7c15
		lb.Pick(hs, hint)
	}
}
