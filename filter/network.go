package filter

import (
	"sync"
	"time"

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
// that fails the write. A Close it calls takes effect after the bytes
// it returned are written (and, for a reset, sent). It runs in the
// writer's goroutine under the connection's write lock: it may block,
// which pushes back on the writer (a bandwidth limit; it should end its
// wait when the connection closes), but must not write to the
// connection. data is valid only during the call.
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
	// passed: bytes at the front of the unconsumed data that the filter
	// let through and the next handler has not consumed yet (they are
	// not shown to the filter again).
	passed int

	mu sync.Mutex
	// held: the filter stopped; early: a Continue came before the Stop
	// it answers; startNext: the next filters' OnNewConnection waits for
	// the hold OnNewConnection asked for to end.
	held, early, startNext bool
	// inData: OnData runs, and a Close waits for its bytes to go on
	// (closing: the kind asked for).
	inData  bool
	closing int8
	// draining: a close with a FIN is under way; what comes is dropped.
	draining bool
	state    map[string]any
}

// The kinds of close a filter asks for.
const (
	closeFIN int8 = 1 + iota
	closeRST
)

// OnStart runs the filter's OnNewConnection at accept, then the next
// filters' (listener: network.Start), unless the filter holds the
// connection (then they run when it continues) or closed it.
func (h *readHandler) OnStart() {
	h.started = true
	if h.f.OnNewConnection(h) == Stop {
		h.mu.Lock()
		if h.draining {
			h.mu.Unlock()
			return // closed at once (an abort on accept)
		}
		if h.hold() {
			h.startNext = true
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
	h.startNextFilters()
}

func (h *readHandler) startNextFilters() {
	h.mu.Lock()
	closing := h.draining
	h.mu.Unlock()
	if s, ok := h.next.(network.Starter); ok && !closing && !h.c.Closed() {
		s.OnStart()
	}
}

func (h *readHandler) OnRead(data []byte) int {
	if !h.started {
		h.OnStart()
	}
	h.mu.Lock()
	held, draining := h.held, h.draining
	h.mu.Unlock()
	if draining {
		return len(data) // a closing connection's input is dropped
	}
	if held || h.c.Closed() {
		return 0
	}
	total := h.passed
	var ask int8
	for total < len(data) {
		fresh := data[total:]
		h.mu.Lock()
		h.inData = true
		h.mu.Unlock()
		n, st := h.f.OnData(h, fresh, false)
		total += max(0, min(n, len(fresh)))
		h.mu.Lock()
		h.inData = false
		ask, h.closing = h.closing, 0
		// A Continue that came before its Stop: the rest is offered again.
		again := ask == 0 && st == Stop && !h.hold()
		h.mu.Unlock()
		if !again {
			break
		}
	}
	consumed := 0
	if total > 0 && !h.c.Closed() {
		// What the filter let through goes on, even when it stopped.
		consumed = h.next.OnRead(data[:total])
		h.passed = total - consumed
	}
	if ask != 0 {
		h.end(ask)
	}
	return consumed
}

func (h *readHandler) OnEOF() {
	h.mu.Lock()
	skip := h.held || h.draining
	h.inData = !skip
	h.mu.Unlock()
	if !skip && !h.c.Closed() {
		h.f.OnData(h, nil, true)
	}
	h.mu.Lock()
	h.inData = false
	ask := h.closing
	h.closing = 0
	h.mu.Unlock()
	if ask != 0 {
		h.end(ask)
		return
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

// hold pauses reading; false when the filter continued already. The
// caller holds mu.
func (h *readHandler) hold() bool {
	if h.early {
		h.early = false
		return false
	}
	h.held = true
	h.c.PauseReadFor(network.PauseFilter)
	return true
}

func (h *readHandler) resume() {
	h.mu.Lock()
	was, next := h.held, h.startNext
	h.held, h.startNext = false, false
	h.early = !was && !h.draining // a Continue before the Stop it answers
	h.mu.Unlock()
	if next {
		h.startNextFilters()
	}
	if was {
		h.c.ResumeReadFor(network.PauseFilter)
	}
}

// end closes the connection as the filter asked: a reset once what was
// written has left (bounded), or a FIN after which the peer's input is
// read and dropped until it closes too (a close with unread input would
// make the kernel send a reset instead). Neither blocks the caller.
func (h *readHandler) end(kind int8) {
	if kind == closeRST {
		h.c.WillReset() // a handler closing first still resets
		go h.c.ResetAfterFlush(time.Second)
		return
	}
	h.mu.Lock()
	h.draining, h.held, h.startNext = true, false, false
	h.mu.Unlock()
	h.c.ResumeReadFor(network.PauseFilter)
	go h.c.LingerClose(time.Second)
}

// ConnCallbacks

func (h *readHandler) Conn() *network.Conn { return h.c }

func (h *readHandler) Continuation() ConnContinuation { return ConnContinuation{h} }

func (h *readHandler) Close(reset bool) {
	kind := closeFIN
	if reset {
		kind = closeRST
		// At once, not when OnData returns: the bytes it lets on may
		// bring an answer whose failed write closes the connection
		// before end runs, and that close must be a reset too.
		h.c.WillReset()
	}
	h.mu.Lock()
	if h.inData {
		h.closing = max(h.closing, kind) // after the bytes OnData let on
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.end(kind)
}

func (h *readHandler) State() map[string]any {
	if h.state == nil {
		h.state = map[string]any{}
	}
	return h.state
}
