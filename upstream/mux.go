package upstream

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/transport"
)

// MuxPool holds a host's multiplexed connections (HTTP/2). A request
// takes a stream on the first connection with room under the server's
// SETTINGS_MAX_CONCURRENT_STREAMS; when every connection is full, another
// is dialled within the cluster's max_connections; beyond that the request
// waits, as a pending request, for a stream to end.
type MuxPool struct {
	host  *Host
	codec *protocol.Codec
	opts  protocol.MuxOptions
	// alpn is offered on TLS connections whose cluster names none: h2
	// for the cluster's HTTP/2 pool, nothing for another protocol's.
	alpn []string
	// override is offered instead of any other (a pool of Host.PoolsFor).
	override []string

	mu      sync.Mutex
	conns   []*muxConn
	dialing bool
	waiting int
	changed chan struct{} // closed and replaced when a stream may be free
	closed  bool
}

type muxConn struct {
	protocol.MuxConn
	used bool // carried a stream before (for the safe-retry rule)
}

// ErrPoolClosed: the host left the cluster while the request waited.
var ErrPoolClosed = errors.New("upstream: host removed")

func newMuxPool(h *Host, codec *protocol.Codec, opts protocol.MuxOptions, alpn []string) *MuxPool {
	return &MuxPool{host: h, codec: codec, opts: opts, alpn: alpn, changed: make(chan struct{})}
}

// NewStream returns a stream for one request and whether its connection
// carried streams before. ctx cancels the wait and the connect; wait bounds
// the wait (0: no bound).
func (p *MuxPool) NewStream(ctx context.Context, wait time.Duration) (protocol.ClientStream, bool, error) {
	cl := p.host.cluster
	var timeout <-chan time.Time
	pending := false
	defer func() {
		if pending {
			cl.Breaker.Pending.Add(-1)
			cl.Stats.RqPendingActive.Dec()
		}
	}()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, ErrPoolClosed
		}
		p.reapLocked()
		for _, mc := range p.conns {
			if mc.Capacity() == 0 {
				continue
			}
			if cs, err := mc.NewStream(); err == nil {
				reused := mc.used
				mc.used = true
				p.mu.Unlock()
				return cs, reused, nil
			}
		}
		if p.mayDialLocked() {
			p.dialing = true
			p.mu.Unlock()
			err := p.dial(ctx)
			p.mu.Lock()
			p.dialing = false
			p.notifyLocked()
			p.mu.Unlock()
			if err != nil {
				return nil, false, err
			}
			continue
		}
		if !pending {
			cl.Stats.CxOverflow.Inc()
			if !tryAcquire(&cl.Breaker.Pending, cl.Breaker.MaxPendingRequests) {
				p.mu.Unlock()
				cl.Stats.RqPendingOverflow.Inc()
				return nil, false, ErrPendingOverflow
			}
			pending = true
			cl.Stats.RqPendingTotal.Inc()
			cl.Stats.RqPendingActive.Inc()
			if wait > 0 {
				t := time.NewTimer(wait)
				defer t.Stop()
				timeout = t.C
			}
		}
		ch := p.changed
		p.waiting++
		p.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		case <-timeout:
			err = ErrPendingTimeout
		}
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
		if err != nil {
			return nil, false, err
		}
	}
}

// mayDialLocked takes a connection slot for a dial: within the cluster's
// max_connections, or the first connection of a host that has none (as
// Pool allows). mu held.
func (p *MuxPool) mayDialLocked() bool {
	if p.dialing {
		return false
	}
	b := p.host.cluster.Breaker
	if tryAcquire(&b.Connections, b.MaxConnections) {
		return true
	}
	if len(p.conns) == 0 {
		b.Connections.Add(1)
		return true
	}
	return false
}

// notifyLocked wakes the waiters. mu held.
func (p *MuxPool) notifyLocked() {
	if p.waiting > 0 {
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

func (p *MuxPool) notify() {
	p.mu.Lock()
	p.notifyLocked()
	p.mu.Unlock()
}

// reapLocked shuts connections idle past the cluster's idle timeout.
// mu held.
func (p *MuxPool) reapLocked() {
	it := p.host.cluster.IdleTimeout
	if it <= 0 {
		return
	}
	for _, mc := range p.conns {
		if since := mc.IdleSince(); !since.IsZero() && time.Since(since) > it {
			mc.Shutdown()
		}
	}
}

// dial opens a connection and adds it to the pool.
func (p *MuxPool) dial(ctx context.Context) error {
	raw, err := p.host.connect(ctx, transport.ALPN{Default: p.alpn, Override: p.override})
	if err != nil {
		return err
	}
	return p.adopt(raw)
}

// adopt adds raw, a connection that negotiated h2 and counts as active,
// to the pool.
func (p *MuxPool) adopt(raw net.Conn) error {
	mc := &muxConn{}
	opts := p.opts
	opts.OnCapacity = p.notify
	opts.OnClose = func() { p.remove(mc) } // called on a goroutine of its own
	p.mu.Lock()
	// Added under mu before its reader starts, so that a close right away
	// finds it to remove.
	mc.MuxConn = p.codec.NewMux(raw, opts)
	p.conns = append(p.conns, mc)
	closed := p.closed
	p.mu.Unlock()
	if closed {
		mc.Close()
		return ErrPoolClosed
	}
	return nil
}

// remove forgets a connection that closed.
func (p *MuxPool) remove(mc *muxConn) {
	p.mu.Lock()
	for i, c := range p.conns {
		if c == mc {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	p.notifyLocked()
	p.mu.Unlock()
	cl := p.host.cluster
	cl.Breaker.Connections.Add(-1)
	cl.Stats.CxActive.Dec()
	cl.Stats.CxDestroy.Inc()
	p.host.CxActive.Add(-1)
}

// Close shuts every connection: idle ones close now, busy ones after their
// streams end.
func (p *MuxPool) Close() {
	p.mu.Lock()
	p.closed = true
	conns := append([]*muxConn(nil), p.conns...)
	p.notifyLocked()
	p.mu.Unlock()
	for _, mc := range conns {
		mc.Shutdown()
	}
}
