package random

import (
	"testing"

	"github.com/straitproxy/strait/upstream"
)

func TestWeightedProportion(t *testing.T) {
	hs := upstream.NewTestHostSet([]uint32{3, 1})
	b := New()
	got := map[*upstream.Host]int{}
	for r := uint64(0); r < 400; r++ {
		got[b.Pick(hs, &upstream.PickHint{Random: r})]++
	}
	if got[hs.Hosts[0]] != 300 || got[hs.Hosts[1]] != 100 {
		t.Fatalf("picks %d/%d, want 300/100", got[hs.Hosts[0]], got[hs.Hosts[1]])
	}
}

func TestUniform(t *testing.T) {
	hs := upstream.NewTestHostSet([]uint32{1, 1})
	b := New()
	if b.Pick(hs, &upstream.PickHint{Random: 0}) == b.Pick(hs, &upstream.PickHint{Random: 1}) {
		t.Fatal("consecutive random numbers picked the same of two hosts")
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
