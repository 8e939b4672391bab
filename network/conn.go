package network

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/bufpool"
)

// Handler receives what a connection reads. The I/O model calls OnRead,
// OnEOF and OnClose from one goroutine at a time, never concurrently.
type Handler interface {
	// OnRead is given the bytes read and not yet consumed; it returns how
	// many it consumed. data is valid only during the call: a handler that
	// keeps bytes copies them. Unconsumed bytes are offered again, with
	// more after them, on the next call.
	OnRead(data []byte) (consumed int)
	// OnEOF reports that the peer closed its write side. No OnRead follows.
	OnEOF()
	// OnClose reports that the connection closed, with the cause (nil when
	// closed locally on purpose). It is the last call.
	OnClose(err error)
}

// Starter is implemented by handlers that act when their connection is
// accepted, before anything is read (network read filters'
// OnNewConnection). Start calls it.
type Starter interface {
	OnStart()
}

// Start runs h's OnStart if it has one; the listener calls it once a
// connection's handlers are attached, before the I/O model starts it.
func Start(h Handler) {
	if s, ok := h.(Starter); ok {
		s.OnStart()
	}
}

// ErrBufferLimit is the cause of a close when a handler leaves more bytes
// unconsumed than the connection's buffer limit allows.
var ErrBufferLimit = errors.New("network: read buffer limit exceeded")

// Socket is a connection's transport: a *net.TCPConn under netpoll, a raw
// non-blocking descriptor under epoll. Write must write all of p or fail.
type Socket interface {
	io.ReadWriteCloser
	CloseWrite() error
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
}

// vectorWriter is a Socket that gathers writes itself (epoll's writev).
type vectorWriter interface {
	Writev(bufs [][]byte) (int64, error)
}

// Conn is one accepted or dialled socket with its read buffer. Reads are
// driven by an IOModel; writes are made directly by whoever answers, under a
// mutex, so that concurrent writers (HTTP/2 streams) do not interleave.
type Conn struct {
	raw Socket
	// restored is the original destination a listener filter restored
	// (origdst.go); LocalAddr reports it.
	restored net.Addr
	handler  Handler
	parent   context.Context
	done     chan struct{} // made on first Done, closed by Close

	// ReadBufferSize is the size of each read; BufferLimit bounds the bytes
	// held unconsumed (per_connection_buffer_limit_bytes).
	ReadBufferSize int
	BufferLimit    int

	wmu sync.Mutex

	mu        sync.Mutex
	paused    PauseReason // why reading is paused (0: it is not)
	redeliver bool
	wake      chan struct{}

	closed    atomic.Bool
	closeErr  error
	closeOnce sync.Once
	// resetting: the connection ends with a reset, whoever closes it.
	resetting atomic.Bool

	rx, tx atomic.Uint64
	id     uint64
	start  time.Time
	// termination: why a filter closed the connection (under mu).
	termination string

	// onResume is the I/O model's hook, called by ResumeRead.
	onResume func()

	// info is what the listener filters learned (nil without them).
	info *ConnInfo

	// kickFor is the handler a Kick must reach (guarded by mu);
	// interrupted marks a netpoll read cut short by Kick's deadline.
	kickFor     Handler
	kicked      atomic.Bool // kickFor is set: a cheap test per read
	interrupted atomic.Bool // Kick set a past read deadline (kickMu)
	kickMu      sync.Mutex

	// peer is the peer's identity, made once from the TLS state.
	peer atomic.Pointer[PeerIdentity]

	// tr is the transport socket that reads and writes through this
	// connection's socket (TLS under epoll); nil: bytes as they are.
	tr Transport
	// secure: a transport socket (TLS) carries the connection.
	secure bool

	// base is the socket as accepted or dialled, under any transport
	// (Reset sets its SO_LINGER).
	base Socket
	// wf are the network write filters, in the order writes meet them.
	wf []WriteFilter

	// detach is a Detach waiting for the reader (under mu); detaching
	// says one is under way; migrated: the socket went to another
	// process (detach.go).
	detach    *DetachRequest
	detaching atomic.Bool
	migrated  atomic.Bool
}

// WriteFilter sees the bytes written to a connection before its socket
// (and before a transport socket encrypts them): a network write filter.
type WriteFilter interface {
	// OnWrite returns the bytes to write in p's place (p itself, a part
	// of it, or another buffer) or an error that fails the write. It runs
	// under the connection's write lock, in the writer's goroutine: it
	// may block, which pushes back on the writer (a bandwidth limit), but
	// must not write to the connection itself. A close it starts (Close,
	// LingerClose, ResetAfterFlush on a goroutine) comes after the write.
	// p is valid only during the call.
	OnWrite(p []byte) ([]byte, error)
}

// AddWriteFilter appends f to the filters writes pass through; it is
// called while the connection's filters are attached, before it starts.
func (c *Conn) AddWriteFilter(f WriteFilter) { c.wf = append(c.wf, f) }

// filterWrite passes p through the write filters (under wmu).
func (c *Conn) filterWrite(p []byte) ([]byte, error) {
	for _, f := range c.wf {
		var err error
		if p, err = f.OnWrite(p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Transport is a transport socket the I/O model drives from outside the
// socket (under epoll, whose readers read the descriptor themselves): it
// is the connection's handler for the bytes read, gives the plaintext to
// its own inner handler, and every write goes through it.
type Transport interface {
	Handler
	// Write writes p whole (encrypting it); the caller holds the
	// connection's write lock.
	Write(p []byte) (int, error)
	// CloseWrite ends the transport's stream (close_notify) and half-
	// closes the socket.
	CloseWrite() error
	// Pending reports whether it holds bytes not yet given to its inner
	// handler (which then are offered again on ResumeRead).
	Pending() bool
}

// MarkSecure records that a transport socket (TLS) carries the
// connection; it is called before the connection's filters are attached.
func (c *Conn) MarkSecure() { c.secure = true }

// Secure reports whether a transport socket (TLS) carries the connection
// (its handshake may not have happened yet).
func (c *Conn) Secure() bool { return c.secure }

// SetTransport makes t the connection's transport socket and handler.
// It is called before the I/O model starts the connection, or from
// inside the current handler's OnRead.
func (c *Conn) SetTransport(t Transport) {
	c.tr = t
	c.handler = t
}

// ConnInfo is what the listener filters learned about a connection
// before its filter chain was chosen (Envoy's connection socket fields).
type ConnInfo struct {
	// TransportProtocol is "tls" when tls_inspector saw a ClientHello,
	// else "raw_buffer".
	TransportProtocol string
	// ServerName is the SNI the client asked for ("" when none).
	ServerName string
	// ApplicationProtocols are the ALPN protocols the client offered, or
	// what http_inspector found ("http/1.1", "http/1.0", "h2c").
	ApplicationProtocols []string
}

// TLSState returns the negotiated TLS session of the connection (version,
// suite, SNI, ALPN, the peer's verified certificates: the identity RBAC
// and access logs read); ok is false for a plaintext connection or
// before the handshake completed.
func (c *Conn) TLSState() (cs tls.ConnectionState, ok bool) {
	type stater interface{ ConnectionState() tls.ConnectionState }
	if st, isTLS := c.session().(stater); isTLS {
		cs = st.ConnectionState()
		return cs, cs.HandshakeComplete
	}
	return cs, false
}

// session is what the connection reads through: its transport socket,
// else its (possibly wrapped) socket.
func (c *Conn) session() any {
	if c.tr != nil {
		return c.tr
	}
	if u, isLate := c.raw.(interface{ Upper() Socket }); isLate {
		return u.Upper()
	}
	return c.raw
}

// LocalCertificate is the leaf certificate this side presented on a TLS
// connection (nil for plaintext, or when its transport does not say).
func (c *Conn) LocalCertificate() *x509.Certificate {
	if l, ok := c.session().(interface{ LocalCertificate() *x509.Certificate }); ok {
		return l.LocalCertificate()
	}
	return nil
}

// PeerIdentity is the peer certificate's names, as RBAC's authenticated
// principals and access logs read them; rendered once per connection.
type PeerIdentity struct {
	// Present: the peer sent a certificate (verified as its transport
	// socket's validation context says).
	Present  bool
	URIs     []string
	DNSNames []string
	Subject  string
}

var noPeer = &PeerIdentity{}

// Peer returns the peer's identity (not Present: no certificate, no
// TLS, or the handshake is not done).
func (c *Conn) Peer() *PeerIdentity {
	if p := c.peer.Load(); p != nil {
		return p
	}
	cs, ok := c.TLSState()
	if !ok {
		return noPeer
	}
	p := &PeerIdentity{}
	if len(cs.PeerCertificates) > 0 {
		leaf := cs.PeerCertificates[0]
		p.Present = true
		for _, u := range leaf.URIs {
			p.URIs = append(p.URIs, u.String())
		}
		p.DNSNames = leaf.DNSNames
		p.Subject = leaf.Subject.String()
	}
	c.peer.Store(p)
	return p
}

// connIDs numbers connections, from 1, for the process's life.
var connIDs atomic.Uint64

// ID is the connection's number (access logs' %CONNECTION_ID%).
func (c *Conn) ID() uint64 { return c.id }

// SetTerminationDetails says why a filter closes the connection
// (%CONNECTION_TERMINATION_DETAILS%); the first reason stays.
func (c *Conn) SetTerminationDetails(s string) {
	c.mu.Lock()
	if c.termination == "" {
		c.termination = s
	}
	c.mu.Unlock()
}

// TerminationDetails is what SetTerminationDetails recorded.
func (c *Conn) TerminationDetails() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.termination
}

// Start is when the connection was accepted (or made).
func (c *Conn) Start() time.Time { return c.start }

// Info returns what the listener filters learned; nil when the listener
// has none.
func (c *Conn) Info() *ConnInfo { return c.info }

// SetInfo records what the listener filters learned; it is called once,
// before the connection's filters are attached.
func (c *Conn) SetInfo(i *ConnInfo) { c.info = i }

// NewConn wraps raw. ctx is the parent (the listener's); Conn.Context is
// cancelled when the connection closes.
func NewConn(ctx context.Context, raw Socket) *Conn {
	return &Conn{raw: raw, base: raw, parent: ctx, ReadBufferSize: bufpool.Medium, BufferLimit: 1 << 20, id: connIDs.Add(1),
		start: time.Now()}
}

// SetHandler sets the receiver of reads. It is called before the I/O
// model starts the connection, or from inside the current handler's
// OnRead (a listener filter handing the connection to its filter chain):
// the next delivery goes to h.
func (c *Conn) SetHandler(h Handler) { c.handler = h }

// Context is cancelled when the connection closes; it carries the
// listener context's values. It costs nothing until Done is first called
// (an idle connection holds no context of its own).
func (c *Conn) Context() context.Context { return (*connCtx)(c) }

type connCtx Conn

func (c *connCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *connCtx) Value(key any) any           { return c.parent.Value(key) }

func (c *connCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.closed.Load() {
			close(c.done)
		}
	}
	return c.done
}

func (c *connCtx) Err() error {
	if c.closed.Load() {
		return context.Canceled
	}
	return nil
}

// Socket returns the transport (for the TLS handshake and socket options).
func (c *Conn) Socket() Socket { return c.raw }

// WrapSocket replaces the socket with wrap's (a transport socket: TLS).
// It must be called before the I/O model starts the connection.
func (c *Conn) WrapSocket(wrap func(Socket) (Socket, error)) error {
	s, err := wrap(c.raw)
	if err != nil {
		return err
	}
	c.raw = s
	return nil
}

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// LocalAddr returns the local address.
func (c *Conn) LocalAddr() net.Addr {
	if c.restored != nil {
		return c.restored
	}
	return c.raw.LocalAddr()
}

// Write writes p whole. It blocks while the peer does not read, which is how
// a slow reader pushes back on whoever is producing. Conn does not retain p.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	var n int
	var err error
	if c.wf != nil {
		n, err = c.writeFiltered(p)
		c.wmu.Unlock()
		return n, err
	}
	if c.tr != nil {
		n, err = c.tr.Write(p)
	} else {
		n, err = c.raw.Write(p)
	}
	c.wmu.Unlock()
	c.tx.Add(uint64(n))
	return n, err
}

// writeFiltered writes p through the write filters (under wmu); it
// reports len(p) written when all the filters let out went.
func (c *Conn) writeFiltered(p []byte) (int, error) {
	out, err := c.filterWrite(p)
	if err != nil {
		return 0, err
	}
	var n int
	if len(out) > 0 {
		if c.tr != nil {
			n, err = c.tr.Write(out)
		} else {
			n, err = c.raw.Write(out)
		}
	}
	c.tx.Add(uint64(n))
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Writev writes the buffers in order as one gathered write.
func (c *Conn) Writev(bufs ...[]byte) (int64, error) {
	var n int64
	var err error
	c.wmu.Lock()
	if c.wf != nil {
		for _, b := range bufs {
			var m int
			m, err = c.writeFiltered(b)
			n += int64(m)
			if err != nil {
				break
			}
		}
		c.wmu.Unlock()
		return n, err
	}
	if c.tr != nil {
		for _, b := range bufs {
			var m int
			m, err = c.tr.Write(b)
			n += int64(m)
			if err != nil {
				break
			}
		}
	} else if vw, ok := c.raw.(vectorWriter); ok {
		n, err = vw.Writev(bufs)
	} else {
		nb := net.Buffers(bufs)
		n, err = nb.WriteTo(c.raw)
	}
	c.wmu.Unlock()
	c.tx.Add(uint64(n))
	return n, err
}

// BytesRead and BytesWritten report the bytes moved so far.
func (c *Conn) BytesRead() uint64 { return c.rx.Load() }

// BytesWritten reports the bytes written so far.
func (c *Conn) BytesWritten() uint64 { return c.tx.Load() }

// PauseReason says who paused a connection's reading: reading goes on
// only when every one of them resumed it, so a network filter holding
// the connection and the handler behind it pausing for its own reasons
// do not undo each other.
type PauseReason uint8

const (
	// PauseHandler is the connection's handler's own pause (PauseRead).
	PauseHandler PauseReason = 1 << iota
	// PauseFilter is a network read filter holding the connection.
	PauseFilter
)

// PauseRead stops delivering bytes to the handler until ResumeRead; the
// kernel's buffers then fill and TCP pushes back on the peer. Any goroutine
// may call it.
func (c *Conn) PauseRead() { c.PauseReadFor(PauseHandler) }

// PauseReadFor pauses reading for reason r.
func (c *Conn) PauseReadFor(r PauseReason) {
	c.mu.Lock()
	c.paused |= r
	c.mu.Unlock()
}

// Paused reports whether reading is paused.
func (c *Conn) Paused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused != 0
}

// ResumeRead undoes PauseRead. Bytes that were left unconsumed are offered
// to the handler again before the next read from the socket.
func (c *Conn) ResumeRead() { c.ResumeReadFor(PauseHandler) }

// ResumeReadFor undoes PauseReadFor(r); reading resumes when no other
// reason holds it.
func (c *Conn) ResumeReadFor(r PauseReason) {
	c.mu.Lock()
	wasPaused := c.paused != 0
	c.paused &^= r
	if c.paused != 0 {
		c.mu.Unlock()
		return
	}
	c.redeliver = true
	if wasPaused && c.tr != nil && c.tr.Pending() {
		// The transport holds what the handler left: it must be
		// offered again though the model's buffer may be empty.
		c.kickFor = c.tr
		c.kicked.Store(true)
	}
	c.mu.Unlock()
	if wasPaused {
		if c.wake != nil {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		if c.onResume != nil {
			c.onResume()
		}
	}
}

// Kick makes the reader offer the unconsumed bytes (perhaps none) to the
// handler h again now, without waiting for more: a listener filter's
// timeout hands the connection on to a filter chain from the reader's
// goroutine. Nothing is delivered if h is no longer the handler by then.
func (c *Conn) Kick(h Handler) {
	c.mu.Lock()
	c.kickFor = h
	c.kicked.Store(true)
	c.mu.Unlock()
	if c.onResume != nil {
		c.onResume() // epoll: a reader starts and redelivers
		return
	}
	// netpoll: the reader is blocked in Read; a deadline in the past
	// wakes it.
	if d, ok := c.raw.(interface{ SetReadDeadline(time.Time) error }); ok {
		c.kickMu.Lock()
		c.interrupted.Store(true)
		d.SetReadDeadline(time.Unix(1, 0))
		c.kickMu.Unlock()
	}
}

// clearInterrupt undoes Kick's read deadline (netpoll's reader, before
// it reads); it reports whether there was one.
func (c *Conn) clearInterrupt() bool {
	if !c.interrupted.Load() {
		return false
	}
	c.kickMu.Lock()
	defer c.kickMu.Unlock()
	if !c.interrupted.Swap(false) {
		return false
	}
	if d, ok := c.raw.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.SetReadDeadline(time.Time{})
	}
	return true
}

// TakeKick reports, on the reader's goroutine, whether a Kick for the
// current handler is pending, and clears it.
func (c *Conn) TakeKick() bool {
	if !c.kicked.Load() {
		return false
	}
	c.mu.Lock()
	c.kicked.Store(false)
	defer c.mu.Unlock()
	k := c.kickFor
	c.kickFor = nil
	return k != nil && k == c.handler
}

// CloseWrite half-closes the socket's write side.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.tr != nil {
		return c.tr.CloseWrite()
	}
	return c.raw.CloseWrite()
}

// waitReadable blocks while reading is paused. It returns false when the
// connection closed meanwhile, and whether unconsumed bytes must be offered
// again; or a Detach waiting for the reader.
func (c *Conn) waitReadable() (ok, redeliver bool, d *DetachRequest) {
	for {
		c.mu.Lock()
		if c.paused == 0 {
			r := c.redeliver
			c.redeliver = false
			c.mu.Unlock()
			return !c.closed.Load(), r, nil
		}
		if c.detach != nil && !c.closed.Load() {
			d := c.detach
			c.detach = nil
			c.mu.Unlock()
			return false, false, d
		}
		c.mu.Unlock()
		if c.closed.Load() {
			return false, false, nil
		}
		<-c.wake
	}
}

// finish reports the close to the handler.
func (c *Conn) finish(readErr error) {
	if readErr != nil && !errors.Is(readErr, io.EOF) {
		c.closeWith(readErr)
	} else {
		c.closeWith(nil)
	}
	// closeOnce.Do returned, so closeErr is settled and visible.
	c.handler.OnClose(c.closeErr)
}

// The driver API: what an I/O model outside this package uses to run a
// connection. Handlers never call these.

// SetOnResume installs the I/O model's hook for ResumeRead; it must be set
// before the connection starts.
func (c *Conn) SetOnResume(f func()) { c.onResume = f }

// Readable reports, without blocking, whether reading may go on (false
// while paused or closed) and whether unconsumed bytes must be offered
// again first.
func (c *Conn) Readable() (ok, redeliver bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused != 0 || c.closed.Load() {
		return false, false
	}
	r := c.redeliver
	c.redeliver = false
	return true, r
}

// Deliver hands bytes read to the handler and reports how many it
// consumed; it counts them as received when fresh is set.
func (c *Conn) Deliver(data []byte, fresh int) int {
	c.rx.Add(uint64(fresh))
	return c.handler.OnRead(data)
}

// CountRead counts bytes read but held for later delivery.
func (c *Conn) CountRead(n int) { c.rx.Add(uint64(n)) }

// DeliverEOF reports the peer's half-close to the handler.
func (c *Conn) DeliverEOF() { c.handler.OnEOF() }

// Finish closes the connection (with readErr as the cause unless it is
// nil or EOF) and reports the close to the handler. An I/O model calls it
// exactly once, after its last delivery.
func (c *Conn) Finish(readErr error) { c.finish(readErr) }
