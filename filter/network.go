package filter

import (
	"sync"
	"sync/atomic"

	"github.com/straitproxy/strait/network"
)

// The network (L4) read filter contract (docs/design/filters.md): a
// filter instance per connection sees its bytes before the filters
// after it, and may hold them. NetworkReadFactory adapts a factory of
// them to NetworkFactory, so they sit in a filter chain beside
// tcp_proxy and the HTTP connection manager.

// ReadFilter is one connection's network read filter.
type ReadFilter interface {
	// OnNewConnection runs when the connection is accepted, once its
	// filters are attached and before anything is read, in chain order;
	// Stop holds the connection (no bytes read) until the continuation
	// resumes it. It may Close the connection (an abort on accept).
	OnNewConnection(cb ConnCallbacks) Status
	// OnData is given bytes read and not yet let through (end: the peer
	// closed its side after them). It returns how many of them go on to
	// the next filters now (the rest are offered again with more), and
	// Stop to hold the connection's reading until the continuation
	// resumes it. data is valid only during the call. A Close called
	// from OnData takes effect once the bytes it let through went on.
	OnData(cb ConnCallbacks, data []byte, end bool) (n int, st Status)
}

// WriteFilter is implemented by read filters that also see what is
// written to the connection (Envoy's write filters): writes meet them in
// the reverse of the chain's order, before a transport socket encrypts
// them. OnWrite returns the bytes to write in data's place, or an error
// that fails the write; with network.ErrWriteClose or ErrWriteReset the
// bytes returned are written, then the connection ends. It runs in the
// writer's goroutine under the connection's write lock: it may block,
// which pushes back on the writer (a bandwidth limit), but must not
// write to the connection. data is valid only during the call.
type WriteFilter interface {
	OnWrite(cb ConnCallbacks, data []byte) ([]byte, error)
}

// ConnCallbacks is the connection as its read filters see it.
type ConnCallbacks interface {
	// Conn is the connection: addresses, TLSState, Peer, Info (SNI).
	Conn() *network.Conn
	// Continuation resumes a filter that returned Stop, from any
	// goroutine (once).
	Continuation() ConnContinuation
	// Close ends the connection; reset sends a TCP RST (SO_LINGER 0)
	// instead of a FIN where the socket allows.
	Close(reset bool)
	// State is the connection's filter state, shared along the chain.
	State() map[string]any
}

// ConnContinuation resumes a held connection.
type ConnContinuation struct{ h *readHandler }

// Continue resumes reading: held bytes go to the filter again.
func (k ConnContinuation) Continue() {
	if k.h != nil {
		k.h.resume()
	}
}

// NetworkReadFactory makes a connection's read filter.
type NetworkReadFactory interface {
	NewReadFilter(c *network.Conn) (ReadFilter, error)
}

// ReadFilterFactory adapts f into a non-terminal NetworkFactory.
func ReadFilterFactory(f NetworkReadFactory) NetworkFactory { return readFactory{f} }

type readFactory struct{ f NetworkReadFactory }

func (readFactory) Terminal() bool { return false }

func (r readFactory) NewHandler(c *network.Conn, next network.Handler) (network.Handler, error) {
	f, err := r.f.NewReadFilter(c)
	if err != nil {
		return nil, err
	}
	h := &readHandler{f: f, next: next, c: c}
	if w, ok := f.(WriteFilter); ok {
		c.AddWriteFilter(writeAdapter{h, w})
	}
	return h, nil
}

// writeAdapter makes a WriteFilter a network.WriteFilter.
type writeAdapter struct {
	h *readHandler
	w WriteFilter
}

func (a writeAdapter) OnWrite(p []byte) ([]byte, error) { return a.w.OnWrite(a.h, p) }

// readHandler runs one read filter in front of the next handler.
type readHandler struct {
	f    ReadFilter
	next network.Handler
	c    *network.Conn

	started bool
	// inData: OnData runs, and a Close waits for its bytes to go on
	// (closing: 1, or 2 for a reset). Atomic: a timer may Close.
	inData  atomic.Bool
	closing atomic.Int32
	// passed: bytes at the front of the unconsumed data that the filter
	// let through and the next handler has not consumed yet (they are
	// not shown to the filter again).
	passed int

	mu    sync.Mutex
	held  bool
	early bool
	state map[string]any
}

// OnStart runs the filters' OnNewConnection at accept, in chain order
// (listener: network.Start).
func (h *readHandler) OnStart() {
	h.start()
	if s, ok := h.next.(network.Starter); ok && !h.c.Closed() {
		s.OnStart()
	}
}

func (h *readHandler) start() {
	if !h.started {
		h.started = true
		if h.f.OnNewConnection(h) == Stop {
			h.hold()
		}
	}
}

func (h *readHandler) OnRead(data []byte) int {
	h.start()
	if h.isHeld() || h.c.Closed() {
		return 0
	}
	total := h.passed
	if fresh := data[total:]; len(fresh) > 0 {
		h.inData.Store(true)
		n, st := h.f.OnData(h, fresh, false)
		h.inData.Store(false)
		total += max(0, min(n, len(fresh)))
		if st == Stop && h.hold() {
			// What it let through still goes on.
			if total == 0 {
				h.closeIfAsked()
				return 0
			}
		}
	}
	if total == 0 || h.c.Closed() {
		h.closeIfAsked()
		return 0
	}
	m := h.next.OnRead(data[:total])
	h.passed = total - m
	h.closeIfAsked()
	return m
}

// closeIfAsked ends the connection as OnData asked, its bytes gone on.
func (h *readHandler) closeIfAsked() {
	switch h.closing.Load() {
	case 1:
		h.c.Close()
	case 2:
		h.c.Reset()
	}
}

func (h *readHandler) OnEOF() {
	if !h.isHeld() && !h.c.Closed() {
		h.inData.Store(true)
		h.f.OnData(h, nil, true)
		h.inData.Store(false)
		h.closeIfAsked()
	}
	if !h.c.Closed() {
		h.next.OnEOF()
	}
}

func (h *readHandler) OnClose(err error) {
	h.next.OnClose(err)
	if d, ok := h.f.(Destroyer); ok {
		d.OnDestroy()
	}
}

// hold pauses reading; false when the filter continued already.
func (h *readHandler) hold() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.early {
		h.early = false
		return false
	}
	h.held = true
	h.c.PauseRead()
	return true
}

func (h *readHandler) isHeld() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

func (h *readHandler) resume() {
	h.mu.Lock()
	was := h.held
	h.held = false
	h.early = !was // a Continue before the Stop it answers
	h.mu.Unlock()
	if was {
		h.c.ResumeRead()
	}
}

// ConnCallbacks

func (h *readHandler) Conn() *network.Conn { return h.c }

func (h *readHandler) Continuation() ConnContinuation { return ConnContinuation{h} }

func (h *readHandler) Close(reset bool) {
	if h.inData.Load() {
		if reset {
			h.closing.Store(2)
		} else {
			h.closing.CompareAndSwap(0, 1)
		}
		return
	}
	if reset {
		h.c.Reset()
		return
	}
	h.c.Close()
}

func (h *readHandler) State() map[string]any {
	if h.state == nil {
		h.state = map[string]any{}
	}
	return h.state
}
