package network

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pool runs tasks on a bounded set of goroutines. Workers are started on
// demand up to Max and exit after idling for a while. Run never blocks: when
// all Max workers are busy, the task waits in a FIFO and the next worker to
// finish takes it. Callers bound what they can queue: an HTTP/1.1
// connection hands over at most one request and then stops reading until
// that request is answered, so the queue holds at most one task per
// connection. (A blocking hand-over would stall the epoll model's pollers,
// which read other connections' request bodies that busy workers wait on.)
//
// A parked worker waits on a channel of its own; parked workers form a
// stack, so the most recently busy (its stack and caches warm) takes the
// next task. A janitor retires workers parked for idleFor, so the per-task
// path has no timer and no select.
type Pool struct {
	max     int32
	idleFor time.Duration
	workers atomic.Int32
	busy    atomic.Int32

	mu      sync.Mutex // guards everything below
	idle    []*worker  // parked, longest parked first
	queue   []Runner
	head    int
	closed  bool
	sweeper bool   // the janitor runs
	tick    uint64 // janitor rounds
	quit    chan struct{}
}

// worker is one parked-or-busy goroutine; a nil task tells it to exit.
type worker struct {
	ch     chan Runner // capacity 1: a hand-over never blocks
	parked uint64      // the janitor round when it parked
}

// NewPool returns a pool of at most max workers.
func NewPool(max int) *Pool {
	if max <= 0 {
		max = DefaultWorkers
	}
	return &Pool{max: int32(max), idleFor: 30 * time.Second, quit: make(chan struct{})}
}

// DefaultWorkers is the pool size when none is configured: each in-flight
// request holds one worker while it waits on its upstream.
const DefaultWorkers = 16384

// Runner is a task; a pointer type implementing it is handed over without
// allocating (a func value bound to a method would allocate).
type Runner interface{ Run() }

type funcRunner func()

func (f funcRunner) Run() { f() }

// Go runs task on a worker.
func (p *Pool) Go(task func()) { p.Run(funcRunner(task)) }

// Run runs task on a parked worker, else a new one, else queues it for the
// next worker that finishes. It never blocks.
func (p *Pool) Run(task Runner) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.ch <- task
		return
	}
	if p.workers.Load() < p.max {
		p.workers.Add(1)
		p.mu.Unlock()
		go p.work(&worker{ch: make(chan Runner, 1)}, task)
		return
	}
	p.queue = append(p.queue, task)
	p.mu.Unlock()
}

// next takes the oldest queued task, or parks w (mu held, released).
func (p *Pool) next(w *worker) (Runner, bool) {
	if p.head < len(p.queue) {
		t := p.queue[p.head]
		p.queue[p.head] = nil
		p.head++
		if p.head == len(p.queue) {
			p.queue, p.head = p.queue[:0], 0
		}
		p.mu.Unlock()
		return t, true
	}
	if p.closed {
		p.workers.Add(-1)
		p.mu.Unlock()
		return nil, false
	}
	w.parked = p.tick
	p.idle = append(p.idle, w)
	if !p.sweeper {
		p.sweeper = true
		go p.sweep(p.idleFor)
	}
	p.mu.Unlock()
	return nil, true
}

func (p *Pool) work(w *worker, task Runner) {
	for {
		p.busy.Add(1)
		task.Run()
		p.busy.Add(-1)
		p.mu.Lock()
		t, ok := p.next(w)
		if !ok {
			return
		}
		if t == nil {
			if t = <-w.ch; t == nil {
				return // retired
			}
		}
		task = t
	}
}

// sweep is the janitor: every half idleFor it retires the workers parked
// for a whole idleFor or more (the longest parked are first), and stops
// when none is parked.
func (p *Pool) sweep(idleFor time.Duration) {
	tick := time.NewTicker(max(idleFor/2, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-p.quit:
			return
		}
		p.mu.Lock()
		p.tick++
		n := 0
		for n < len(p.idle) && p.tick-p.idle[n].parked > 2 {
			n++
		}
		retired := append([]*worker(nil), p.idle[:n]...)
		rest := copy(p.idle, p.idle[n:])
		clear(p.idle[rest:])
		p.idle = p.idle[:rest]
		p.workers.Add(-int32(n))
		done := len(p.idle) == 0
		if done {
			p.sweeper = false
		}
		p.mu.Unlock()
		for _, w := range retired {
			w.ch <- nil
		}
		if done {
			return
		}
	}
}

// Active reports the workers running a task.
func (p *Pool) Active() int { return int(p.busy.Load()) }

// Workers reports the live worker goroutines.
func (p *Pool) Workers() int { return int(p.workers.Load()) }

// Max reports the bound.
func (p *Pool) Max() int { return int(p.max) }

// Queued reports the tasks waiting for a worker.
func (p *Pool) Queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) - p.head
}

// Close makes idle workers exit; busy ones exit when their task ends. A
// task given after Close still runs, on a new worker.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		close(p.quit)
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.workers.Add(-int32(len(idle)))
	p.mu.Unlock()
	for _, w := range idle {
		w.ch <- nil
	}
}
