package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/transport"
	"golang.org/x/sys/unix"
)

// Errors from Acquire, classified by the proxy into local replies.
var (
	// ErrPendingOverflow: the cluster's connections are all in use and
	// max_pending_requests requests already wait.
	ErrPendingOverflow = errors.New("upstream: pending request overflow")
	// ErrConnectTimeout: the connect_timeout expired.
	ErrConnectTimeout = errors.New("upstream: connect timeout")
)

// ConnectError wraps a failure to connect to a host.
type ConnectError struct {
	Addr string
	Err  error
}

func (e *ConnectError) Error() string { return "upstream: connect to " + e.Addr + ": " + e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// Conn is one upstream connection, lent by a Pool to one request at a time
// (HTTP/1.1). State is free for the codec to keep across requests.
type Conn struct {
	net.Conn
	host     *Host
	pool     *Pool
	Requests int
	lastUsed time.Time
	// Reused reports whether this connection carried a request before.
	Reused bool
	// State is the codec's per-connection state, kept while pooled.
	State any

	raw    syscall.RawConn
	peekFn func(uintptr)
	alive  bool
	data   bool // the peek found bytes (not end of file)
	// tls is the connection's TLS layer, probed by a short read when the
	// socket has bytes (a TLS 1.3 session ticket, or close_notify).
	tls tlsProbe
}

// tlsProbe is what a pooled TLS connection's probe uses.
type tlsProbe interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}

// Host returns the host c is connected to.
func (c *Conn) Host() *Host { return c.host }

// Pool lends a host's connections: idle ones first (newest first, checked to
// be still open), then new ones within the cluster's max_connections, then
// a bounded wait for one to be released.
type Pool struct {
	host    *Host
	mu      sync.Mutex
	idle    []*Conn
	waiters []chan *Conn
	closed  bool
	// dialing counts connections being dialled: they hold their slots,
	// and a host dialling one has a connection for the exception below.
	dialing int
	// sweeping: a sweep of the idle connections is scheduled.
	sweeping bool
	// override is the ALPN its connections offer instead of the
	// cluster's (a pool of Host.PoolsFor); altMux is the multiplexed
	// pool beside it, where an h2 connection goes (auto_config).
	override []string
	altMux   *MuxPool
}

// Reuse says which connection Acquire may lend.
type Reuse uint8

const (
	// ReuseAny lends an idle connection, probed if idle a while.
	ReuseAny Reuse = iota
	// ReuseChecked probes every idle connection before it is lent,
	// however briefly it was idle (a request that cannot be retried).
	ReuseChecked
	// ReuseNone dials a new connection (the retry of a request that met
	// a pooled one the upstream had closed); an idle connection gives up
	// its slot when the cap is reached.
	ReuseNone
)

// Acquire returns a connection for one request. ctx cancels the wait for
// a free connection and the connect; wait bounds the wait (0: no bound).
func (p *Pool) Acquire(ctx context.Context, wait time.Duration, reuse Reuse) (*Conn, error) {
	cl := p.host.cluster
	for {
		p.mu.Lock()
		if reuse == ReuseNone && len(p.idle) > 0 && cl.Breaker.Connections.Load() >= cl.Breaker.MaxConnections {
			c := p.idle[0] // the oldest
			p.idle = p.idle[1:]
			p.mu.Unlock()
			p.destroy(c)
			p.mu.Lock()
		}
		for reuse != ReuseNone && len(p.idle) > 0 {
			c := p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
			p.mu.Unlock()
			if p.usable(c, reuse == ReuseChecked) {
				c.Reused = true
				return c, nil
			}
			p.destroy(c)
			p.mu.Lock()
		}
		if tryAcquire(&cl.Breaker.Connections, cl.Breaker.MaxConnections) {
			p.dialing++
			p.mu.Unlock()
			return p.dial(ctx, p.alpn())
		}
		if p.host.CxActive.Load() == 0 && p.dialing == 0 && len(p.waiters) == 0 {
			// A host with no connection at all, open or being opened, may
			// open one even when other hosts hold the cluster's
			// max_connections, as Envoy allows; otherwise its requests
			// would wait on slots it can never get.
			cl.Breaker.Connections.Add(1)
			p.dialing++
			p.mu.Unlock()
			return p.dial(ctx, p.alpn())
		}
		cl.Stats.CxOverflow.Inc()
		if !tryAcquire(&cl.Breaker.Pending, cl.Breaker.MaxPendingRequests) {
			p.mu.Unlock()
			cl.Stats.RqPendingOverflow.Inc()
			return nil, ErrPendingOverflow
		}
		ch := make(chan *Conn, 1)
		p.waiters = append(p.waiters, ch)
		p.mu.Unlock()
		cl.Stats.RqPendingTotal.Inc()
		cl.Stats.RqPendingActive.Inc()
		c, err := p.wait(ctx, ch, wait)
		cl.Breaker.Pending.Add(-1)
		cl.Stats.RqPendingActive.Dec()
		if err != nil || c != nil {
			return c, err
		}
		// A connection closed: try again for a slot.
	}
}

// ErrPendingTimeout: no connection came free within the request's timeout.
var ErrPendingTimeout = errors.New("upstream: timed out waiting for a connection")

func (p *Pool) wait(ctx context.Context, ch chan *Conn, wait time.Duration) (*Conn, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case c := <-ch:
		if c != nil {
			c.Reused = true
		}
		return c, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
		err = ErrPendingTimeout
	}
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	select {
	case c := <-ch: // handed over as we gave up: pass it on
		if c != nil {
			p.Release(c, true)
		} else {
			p.wakeOne()
		}
	default:
	}
	return nil, err
}

// The ALPN protocols offered on TLS connections whose cluster names none.
var (
	alpnHTTP1 = []string{"http/1.1"}
	alpnH2    = []string{"h2"}
	alpnAuto  = []string{"h2", "http/1.1"}
)

func (p *Pool) dial(ctx context.Context, alpn []string) (*Conn, error) {
	h := p.host
	raw, err := h.connect(ctx, transport.ALPN{Default: alpn, Override: p.override})
	p.mu.Lock()
	p.dialing--
	p.mu.Unlock()
	if err == nil && h.cluster.Auto && alpn != nil {
		mux := h.mux
		if p.override != nil {
			mux = p.altMux
		}
		err = h.learnProtocol(raw, mux)
	}
	if err != nil {
		p.wakeOne()
		return nil, err
	}
	c := &Conn{Conn: raw, host: h, pool: p, lastUsed: time.Now()}
	sock := raw
	if tc, ok := raw.(interface{ NetConn() net.Conn }); ok {
		// TLS: peek at the TCP socket under it; bytes there are read
		// through TLS to tell a ticket from a close.
		sock = tc.NetConn()
		c.tls, _ = raw.(tlsProbe)
	}
	if sc, ok := sock.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw, c.peekFn = rc, c.peek
		}
	}
	return c, nil
}

// alpn is what the pool's connections offer: with auto_config both h2
// and HTTP/1.1, the server choosing.
func (p *Pool) alpn() []string {
	if p.host.cluster.Auto {
		return alpnAuto
	}
	return alpnHTTP1
}

// ErrProtocolSwitched: the connection the pool opened for a request
// negotiated h2 (auto_config); it went to the host's multiplexed pool,
// where the request is to be sent.
var ErrProtocolSwitched = errors.New("upstream: ALPN chose h2; the request goes over the multiplexed pool")

// learnProtocol records what ALPN chose on a new connection of an
// auto_config cluster; an h2 connection is handed to the multiplexed
// pool (ErrProtocolSwitched).
func (h *Host) learnProtocol(raw net.Conn, mux *MuxPool) error {
	np := ""
	if st, ok := raw.(interface{ ConnectionState() tls.ConnectionState }); ok {
		np = st.ConnectionState().NegotiatedProtocol
	}
	if np != "h2" || mux == nil {
		h.proto.Store(protoHTTP1)
		return nil
	}
	h.proto.Store(protoH2)
	if err := mux.adopt(raw); err != nil {
		return err
	}
	return ErrProtocolSwitched
}

// Release gives c back after a request. reuse=false closes it (the response
// was not read to its end, the peer asked to close, or an error happened).
func (p *Pool) Release(c *Conn, reuse bool) {
	cl := p.host.cluster
	c.Requests++
	if reuse && cl.MaxRequestsPerConn > 0 && c.Requests >= cl.MaxRequestsPerConn {
		reuse = false
	}
	if !reuse || p.host.removed.Load() {
		p.destroy(c)
		return
	}
	c.lastUsed = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.destroy(c)
		return
	}
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w <- c
		return
	}
	p.idle = append(p.idle, c)
	if !p.sweeping {
		p.sweeping = true
		time.AfterFunc(sweepEvery, p.sweep)
	}
	p.mu.Unlock()
}

// sweepEvery is how often idle connections are probed for a close by the
// upstream: a closed one leaves the pool (and CLOSE_WAIT, and
// upstream_cx_active) within it, not when a request next meets it.
const sweepEvery = 500 * time.Millisecond

// sweep probes the idle connections and drops those the upstream closed
// or that passed the idle timeout; it runs while any is idle.
func (p *Pool) sweep() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	var dead []*Conn
	live := idle[:0]
	for _, c := range idle {
		if p.usable(c, true) {
			live = append(live, c)
		} else {
			dead = append(dead, c)
		}
	}
	p.mu.Lock()
	if p.closed {
		// Closed while probing: the live ones close too.
		dead = append(dead, live...)
		live = live[:0]
	}
	// Connections released meanwhile joined p.idle; the live ones go
	// first (they are older), so the newest stay at the end.
	p.idle = append(live, p.idle...)
	p.sweeping = len(p.idle) > 0 && !p.closed
	if p.sweeping {
		time.AfterFunc(sweepEvery, p.sweep)
	}
	p.mu.Unlock()
	for _, c := range dead {
		p.destroy(c)
	}
}

func (p *Pool) destroy(c *Conn) {
	p.drop(c, true)
}

// Handed lets c go once a hot restart's next process took its socket
// (File): closed here, no longer active, but not destroyed.
func (p *Pool) Handed(c *Conn) { p.drop(c, false) }

func (p *Pool) drop(c *Conn, destroyed bool) {
	c.Conn.Close()
	cl := p.host.cluster
	cl.Breaker.Connections.Add(-1)
	cl.Stats.CxActive.Dec()
	if destroyed {
		cl.Stats.CxDestroy.Inc()
	}
	p.host.CxActive.Add(-1)
	p.wakeOne()
}

// File duplicates c's socket for a hot restart's next process (an error
// over TLS or an upstream filter: their state is this process's).
func (c *Conn) File() (*os.File, error) { return network.DupSocket(c.Conn) }

// wakeOne tells the oldest waiter that a connection slot freed up.
func (p *Pool) wakeOne() {
	p.mu.Lock()
	if len(p.waiters) == 0 {
		p.mu.Unlock()
		return
	}
	w := p.waiters[0]
	p.waiters = p.waiters[1:]
	p.mu.Unlock()
	w <- nil
}

// peekAfterIdle: a connection idle for less is reused without the peek
// (a syscall per request under load). An upstream that closes a connection
// so soon after answering on it is rare, and the request is then retried
// as any request that meets a pooled connection closed under it.
const peekAfterIdle = 100 * time.Millisecond

// usable reports whether an idle connection may carry a request: not past
// the idle timeout, and not closed by the peer meanwhile (a non-blocking
// peek: end of file means the peer closed it; waiting data means the peer
// sent something unasked, which also disqualifies it).
func (p *Pool) usable(c *Conn, check bool) bool {
	idle := time.Since(c.lastUsed)
	if it := p.host.cluster.IdleTimeout; it > 0 && idle > it {
		return false
	}
	if c.raw == nil || idle < peekAfterIdle && !check {
		return true
	}
	c.alive, c.data = false, false
	// Control, not Read: a deadline left by the last stream must not
	// fail the probe.
	if err := c.raw.Control(c.peekFn); err != nil {
		return false
	}
	if !c.alive && c.data && c.tls != nil {
		return c.probeTLS()
	}
	return c.alive
}

// peek is Conn's non-blocking MSG_PEEK probe, bound once per connection.
func (c *Conn) peek(fd uintptr) {
	var b [1]byte
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	c.alive = errno == unix.EAGAIN
	c.data = errno == 0 && n > 0
}

// probeTLS reads through TLS what the socket holds: records TLS handles
// itself (a session ticket) leave the read waiting, which is alive;
// close_notify, an alert, or bytes nobody asked for are not. A timeout
// does not stick in crypto/tls.
func (c *Conn) probeTLS() bool {
	c.tls.SetReadDeadline(time.Now().Add(tlsProbeWait))
	var b [1]byte
	n, err := c.tls.Read(b[:])
	c.tls.SetReadDeadline(time.Time{})
	var ne net.Error
	return n == 0 && errors.As(err, &ne) && ne.Timeout()
}

// tlsProbeWait bounds the probe's read: the bytes are in the socket
// already, so it ends at once unless they were all TLS's own.
const tlsProbeWait = 5 * time.Millisecond

// Close closes the idle connections and refuses new idle ones; connections
// lent out are closed when released.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, c := range idle {
		p.destroy(c)
	}
}

// IdleCount reports the idle connections.
func (p *Pool) IdleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// CloseWrite half-closes the connection (a tunnel whose client finished
// sending).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// CodecState returns the slot where the codec keeps its per-connection
// state (protocol.UpstreamConn).
func (c *Conn) CodecState() *any { return &c.State }
