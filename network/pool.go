package network

import (
	"sync/atomic"
	"time"
)

// Pool runs tasks on a bounded set of goroutines. Workers are started on
// demand up to Max and exit after idling for a while. When all Max workers
// are busy, Go blocks until one is free: the caller (a connection's reader)
// then stops reading, and TCP pushes back on the client. Nothing queues
// without bound.
type Pool struct {
	max     int32
	idleFor time.Duration
	tasks   chan Runner
	workers atomic.Int32
	busy    atomic.Int32
	quit    chan struct{}
	closed  atomic.Bool
}

// NewPool returns a pool of at most max workers.
func NewPool(max int) *Pool {
	if max <= 0 {
		max = DefaultWorkers
	}
	return &Pool{max: int32(max), idleFor: 30 * time.Second, tasks: make(chan Runner), quit: make(chan struct{})}
}

// DefaultWorkers is the pool size when none is configured: each in-flight
// request holds one worker while it waits on its upstream.
const DefaultWorkers = 16384

// Runner is a task; a pointer type implementing it is handed over without
// allocating (a func value bound to a method would allocate).
type Runner interface{ Run() }

type funcRunner func()

func (f funcRunner) Run() { f() }

// Go runs task on a worker, blocking while the pool is full.
func (p *Pool) Go(task func()) { p.Run(funcRunner(task)) }

// Run runs task on a worker, blocking while the pool is full.
func (p *Pool) Run(task Runner) {
	select {
	case p.tasks <- task:
		return
	default:
	}
	for {
		n := p.workers.Load()
		if n >= p.max {
			// Wait for a worker, but look again now and then: one may
			// have exited on idle meanwhile, freeing a place.
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case p.tasks <- task:
				t.Stop()
				return
			case <-t.C:
				continue
			}
		}
		if p.workers.CompareAndSwap(n, n+1) {
			go p.work(task)
			return
		}
	}
}

// Active reports the workers running a task; Workers the workers alive.
func (p *Pool) Active() int { return int(p.busy.Load()) }

// Workers reports the live worker goroutines.
func (p *Pool) Workers() int { return int(p.workers.Load()) }

// Max reports the bound.
func (p *Pool) Max() int { return int(p.max) }

func (p *Pool) work(task Runner) {
	defer p.workers.Add(-1)
	idle := time.NewTimer(p.idleFor)
	defer idle.Stop()
	for {
		p.busy.Add(1)
		task.Run()
		p.busy.Add(-1)
		idle.Reset(p.idleFor)
		select {
		case task = <-p.tasks:
		case <-idle.C:
			return
		case <-p.quit:
			return
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
