package network

import (
	"sync"
	"testing"
	"time"
)

func TestPoolBoundsWorkersAndBlocks(t *testing.T) {
	p := NewPool(2)
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(2)
	for i := 0; i < 2; i++ {
		p.Go(func() { started.Done(); <-release })
	}
	started.Wait()
	if p.Active() != 2 || p.Workers() != 2 {
		t.Fatalf("active %d workers %d", p.Active(), p.Workers())
	}
	third := make(chan struct{})
	go func() { p.Go(func() {}); close(third) }()
	select {
	case <-third:
		t.Fatal("Go did not block with every worker busy")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-third:
	case <-time.After(2 * time.Second):
		t.Fatal("Go still blocked after workers freed")
	}
	if p.Workers() > 2 {
		t.Fatalf("%d workers for a pool of 2", p.Workers())
	}
	p.Close()
	deadline := time.Now().Add(2 * time.Second)
	for p.Workers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still alive after Close", p.Workers())
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkPoolGo(b *testing.B) {
	p := NewPool(64)
	defer p.Close()
	var wg sync.WaitGroup
	b.ReportAllocs()
	for b.Loop() {
		wg.Add(1)
		p.Go(wg.Done)
		wg.Wait()
	}
}
