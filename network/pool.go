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
type Pool struct {
	max     int32
	idleFor time.Duration
	tasks   chan Runner   // direct hand-off to a parked worker
	bell    chan struct{} // rung when the queue has work (capacity 1)
	workers atomic.Int32
	busy    atomic.Int32
	quit    chan struct{}
	closed  atomic.Bool

	mu    sync.Mutex // guards queue, and workers leaving
	queue []Runner
	head  int
}

// NewPool returns a pool of at most max workers.
func NewPool(max int) *Pool {
	if max <= 0 {
		max = DefaultWorkers
	}
	return &Pool{max: int32(max), idleFor: 30 * time.Second, tasks: make(chan Runner),
		bell: make(chan struct{}, 1), quit: make(chan struct{})}
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
	select {
	case p.tasks <- task:
		return
	default:
	}
	if p.spawn(task) {
		return
	}
	p.mu.Lock()
	if p.spawn(task) { // a worker may have left meanwhile (they leave under mu)
		p.mu.Unlock()
		return
	}
	p.queue = append(p.queue, task)
	p.mu.Unlock()
	p.ring()
}

func (p *Pool) spawn(task Runner) bool {
	for {
		n := p.workers.Load()
		if n >= p.max {
			return false
		}
		if p.workers.CompareAndSwap(n, n+1) {
			go p.work(task)
			return true
		}
	}
}

func (p *Pool) ring() {
	select {
	case p.bell <- struct{}{}:
	default:
	}
}

// pop takes the oldest queued task, ringing again while more wait so that
// other parked workers join in.
func (p *Pool) pop() Runner {
	p.mu.Lock()
	if p.head == len(p.queue) {
		p.mu.Unlock()
		return nil
	}
	t := p.queue[p.head]
	p.queue[p.head] = nil
	p.head++
	more := p.head < len(p.queue)
	if !more {
		p.queue, p.head = p.queue[:0], 0
	}
	p.mu.Unlock()
	if more {
		p.ring()
	}
	return t
}

// retire lets an idle worker leave unless work is queued, in which case it
// returns that work.
func (p *Pool) retire() Runner {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head < len(p.queue) {
		t := p.queue[p.head]
		p.queue[p.head] = nil
		p.head++
		return t
	}
	p.workers.Add(-1)
	return nil
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

func (p *Pool) work(task Runner) {
	idle := time.NewTimer(p.idleFor)
	defer idle.Stop()
	for {
		p.busy.Add(1)
		task.Run()
		p.busy.Add(-1)
		if task = p.pop(); task != nil {
			continue
		}
		idle.Reset(p.idleFor)
		for task == nil {
			select {
			case task = <-p.tasks:
			case <-p.bell:
				task = p.pop()
			case <-idle.C:
				if task = p.retire(); task == nil {
					return
				}
			case <-p.quit:
				if task = p.retire(); task == nil {
					return
				}
			}
		}
	}
}

// Close makes idle workers exit; busy ones exit when their task ends. A
// task given after Close still runs, on a new worker.
func (p *Pool) Close() {
	if !p.closed.Swap(true) {
		close(p.quit)
	}
}
