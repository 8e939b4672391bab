package filter

import (
	"sync"

	"github.com/straitproxy/strait/network"
)

// The network (L4) read filter contract (docs/design/filters.md): a
// filter instance per connection sees its bytes before the filters
// after it, and may hold them. NetworkReadFactory adapts a factory of
// them to NetworkFactory, so they sit in a filter chain beside
// tcp_proxy and the HTTP connection manager.

// ReadFilter is one connection's network read filter.
type ReadFilter interface {
	// OnNewConnection runs before the first bytes reach the filter;
	// Stop holds the connection (no bytes read) until the continuation
	// resumes it.
	OnNewConnection(cb ConnCallbacks) Status
	// OnData is given bytes read and not yet let through (end: the peer
	// closed its side after them). It returns how many of them go on to
	// the next filters now (the rest are offered again with more), and
	// Stop to hold the connection's reading until the continuation
	// resumes it. data is valid only during the call.
	OnData(cb ConnCallbacks, data []byte, end bool) (n int, st Status)
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
	return &readHandler{f: f, next: next, c: c}, nil
}

// readHandler runs one read filter in front of the next handler.
type readHandler struct {
	f    ReadFilter
	next network.Handler
	c    *network.Conn

	started bool
	// passed: bytes at the front of the unconsumed data that the filter
	// let through and the next handler has not consumed yet (they are
	// not shown to the filter again).
	passed int

	mu    sync.Mutex
	held  bool
	early bool
	state map[string]any
}

func (h *readHandler) OnRead(data []byte) int {
	if !h.started {
		h.started = true
		if h.f.OnNewConnection(h) == Stop && h.hold() {
			return 0
		}
	}
	if h.isHeld() {
		return 0
	}
	total := h.passed
	if fresh := data[total:]; len(fresh) > 0 {
		n, st := h.f.OnData(h, fresh, false)
		total += max(0, min(n, len(fresh)))
		if st == Stop && h.hold() {
			// What it let through still goes on.
			if total == 0 {
				return 0
			}
		}
	}
	if total == 0 || h.c.Closed() {
		return 0
	}
	m := h.next.OnRead(data[:total])
	h.passed = total - m
	return m
}

func (h *readHandler) OnEOF() {
	if !h.isHeld() && !h.c.Closed() {
		h.f.OnData(h, nil, true)
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
	if reset {
		if l, ok := h.c.Socket().(interface{ SetLinger(int) error }); ok {
			l.SetLinger(0)
		}
	}
	h.c.Close()
}

func (h *readHandler) State() map[string]any {
	if h.state == nil {
		h.state = map[string]any{}
	}
	return h.state
}
