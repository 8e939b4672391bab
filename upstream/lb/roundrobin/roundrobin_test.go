package roundrobin

import (
	"testing"

	"github.com/straitproxy/strait/upstream"
)

func TestEqualWeightsRotate(t *testing.T) {
	hs := upstream.NewTestHostSet([]uint32{1, 1, 1})
	b := New()
	got := map[*upstream.Host]int{}
	for i := 0; i < 300; i++ {
		got[b.Pick(hs, nil)]++
	}
	for _, h := range hs.Hosts {
		if got[h] != 100 {
			t.Fatalf("host %s got %d picks, want 100", h.Addr, got[h])
		}
	}
}

func TestWeightedInterleaves(t *testing.T) {
	hs := upstream.NewTestHostSet([]uint32{3, 1})
	b := New()
	var seq []string
	for i := 0; i < 8; i++ {
		seq = append(seq, b.Pick(hs, nil).Addr)
	}
	a, c := hs.Hosts[0].Addr, hs.Hosts[1].Addr
	want := []string{a, a, c, a, a, a, c, a}
	for i := range want {
		if seq[i] != want[i] {
			t.Fatalf("sequence %v, want %v", seq, want)
		}
	}
}

func TestAvoidPreviousHost(t *testing.T) {
	hs := upstream.NewTestHostSet([]uint32{1, 1})
	b := New()
	first := b.Pick(hs, nil)
	b.(*Balancer).next.Add(1) // make the plain next pick land on first again
	if got := b.Pick(hs, &upstream.PickHint{Avoid: first}); got == first {
		t.Fatal("retry picked the host it was told to avoid")
	}
}

func BenchmarkPick(b *testing.B) {
	hs := upstream.NewTestHostSet([]uint32{1, 1, 1, 1})
	lb := New()
	b.ReportAllocs()
	for b.Loop() {
		lb.Pick(hs, nil)
	}
}

// TestWeightedStatePerSet: picks that alternate between two host sets
// (priority levels) keep each set's weighted order.
func TestWeightedStatePerSet(t *testing.T) {
	b := New()
	s1 := upstream.NewTestHostSet([]uint32{3, 1})
	s2 := upstream.NewTestHostSet([]uint32{1, 1})
	got := map[*upstream.Host]int{}
	for range 400 {
		got[b.Pick(s1, &upstream.PickHint{})]++
		b.Pick(s2, &upstream.PickHint{})
	}
	if got[s1.Hosts[0]] != 300 || got[s1.Hosts[1]] != 100 {
		t.Fatalf("weights 3:1 gave %d:%d when picks alternate with another set", got[s1.Hosts[0]], got[s1.Hosts[1]])
	}
}

// TestLargeWeightedSet: a set too large for smooth weighted round robin
// (EDF) still follows the weights.
func TestLargeWeightedSet(t *testing.T) {
	w := make([]uint32, 1000)
	for i := range w {
		w[i] = 1
	}
	w[0] = 999 // half of all weight (1998)
	hs := upstream.NewTestHostSet(w)
	b := New()
	got := map[*upstream.Host]int{}
	for range 19980 { // ten rounds
		got[b.Pick(hs, nil)]++
	}
	if v := got[hs.Hosts[0]]; v < 9980 || v > 10000 {
		t.Fatalf("the heavy host got %d of 19980, want 9990", v)
	}
	for _, h := range hs.Hosts[1:] {
		if v := got[h]; v < 9 || v > 11 {
			t.Fatalf("host %s got %d, want 10", h.Addr, v)
		}
	}
}

func BenchmarkPickWeighted10k(b *testing.B) {
	w := make([]uint32, 10000)
	for i := range w {
		w[i] = uint32(1 + i%7)
	}
	hs := upstream.NewTestHostSet(w)
	lb := New()
	b.ReportAllocs()
	for b.Loop() {
		lb.Pick(hs, nil)
	}
}
