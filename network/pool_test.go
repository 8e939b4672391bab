package network

import (
	"sync"
	"testing"
	"time"
)

func TestPoolBoundsWorkersAndQueues(t *testing.T) {
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
	ran := make(chan int, 10)
	returned := make(chan struct{})
	go func() {
		for i := 0; i < 10; i++ {
			p.Go(func() { ran <- i })
		}
		close(returned)
	}()
	select {
	case <-returned: // Run never blocks
	case <-time.After(2 * time.Second):
		t.Fatal("Go blocked with every worker busy")
	}
	if q := p.Queued(); q != 10 {
		t.Fatalf("queued %d, want 10", q)
	}
	select {
	case <-ran:
		t.Fatal("a queued task ran while every worker was busy")
	default:
	}
	close(release)
	for i := 0; i < 10; i++ {
		select {
		case <-ran:
		case <-time.After(2 * time.Second):
			t.Fatalf("only %d of 10 queued tasks ran", i)
		}
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

// TestPoolQueueSurvivesIdleExit: a worker timing out idle while work is
// queued takes the work instead of leaving.
func TestPoolQueueSurvivesIdleExit(t *testing.T) {
	p := NewPool(1)
	p.idleFor = time.Millisecond
	defer p.Close()
	for round := 0; round < 200; round++ {
		done := make(chan struct{})
		p.Go(func() { close(done) })
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("round %d: task never ran (workers %d, queued %d)", round, p.Workers(), p.Queued())
		}
		time.Sleep(time.Duration(round%3) * time.Millisecond)
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

// TestPoolIdleWorkersRetire: workers parked for idleFor exit (the janitor
// retires them), and the pool starts new ones for later work.
func TestPoolIdleWorkersRetire(t *testing.T) {
	p := NewPool(4)
	p.idleFor = 5 * time.Millisecond
	defer p.Close()
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(4)
	for range 4 {
		p.Go(func() { started.Done(); <-release })
	}
	started.Wait()
	close(release)
	deadline := time.Now().Add(2 * time.Second)
	for p.Workers() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers never retired", p.Workers())
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	p.Go(func() { close(done) })
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("no worker for a task after the others retired")
	}
}
