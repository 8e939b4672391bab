package upstream

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/transport"
)

// ErrConnectionOverflow: the cluster is at max_connections.
var ErrConnectionOverflow = errors.New("upstream: connection overflow")

// Dial opens a connection to h that is not pooled (the TCP proxy's), counted
// in the cluster's connection stats and max_connections. Closing it gives
// the slot back.
func (h *Host) Dial(ctx context.Context) (net.Conn, error) {
	cl := h.cluster
	if !tryAcquire(&cl.Breaker.Connections, cl.Breaker.MaxConnections) {
		cl.Stats.CxOverflow.Inc()
		return nil, ErrConnectionOverflow
	}
	h.pool.mu.Lock()
	h.pool.dialing++ // dial counts it down
	h.pool.mu.Unlock()
	c, err := h.pool.dial(ctx, nil) // a TCP proxy: no ALPN unless configured
	if err != nil {
		return nil, err
	}
	return &dedicated{Conn: c.Conn, host: h}, nil
}

// connect dials h with the cluster's connect timeout, counting the attempt
// in the stats. On failure it gives back the connection slot the caller
// took and reports a *ConnectError; on success the connection counts as
// active.
func (h *Host) connect(ctx context.Context, alpn transport.ALPN) (net.Conn, error) {
	cl := h.cluster
	cl.Stats.CxTotal.Inc()
	h.CxTotal.Add(1)
	d := net.Dialer{Timeout: cl.ConnectTimeout, LocalAddr: cl.source}
	began := time.Now()
	raw, err := d.DialContext(ctx, "tcp", h.Addr)
	if err != nil {
		cl.Breaker.Connections.Add(-1)
		h.CxFail.Add(1)
		cl.Stats.CxConnectFail.Inc()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			cl.Stats.CxConnectTimeout.Inc()
			return nil, &ConnectError{Addr: h.Addr, Err: ErrConnectTimeout}
		}
		return nil, &ConnectError{Addr: h.Addr, Err: err}
	}
	cl.Stats.CxActive.Inc()
	h.CxActive.Add(1)
	tc, err := h.secure(ctx, cl.wrap(raw), alpn)
	if err == nil {
		var fc net.Conn
		if fc, err = h.filterConn(tc); err != nil {
			tc.Close()
		} else {
			tc = fc
		}
	}
	if err != nil {
		cl.Stats.CxActive.Dec()
		h.CxActive.Add(-1)
		cl.Breaker.Connections.Add(-1)
		h.CxFail.Add(1)
		cl.Stats.CxConnectFail.Inc()
		return nil, &ConnectError{Addr: h.Addr, Err: err}
	}
	cl.Stats.CxConnectMs.Observe(float64(time.Since(began).Microseconds()) / 1000)
	return tc, nil
}

// DialUncounted connects to h through the cluster's transport socket, in
// its connect timeout, outside its stats and circuit breakers (the xDS
// client's connection to its management server).
func (h *Host) DialUncounted(ctx context.Context, alpn []string) (net.Conn, error) {
	d := net.Dialer{Timeout: h.cluster.ConnectTimeout, LocalAddr: h.cluster.source}
	nc, err := d.DialContext(ctx, "tcp", h.Addr)
	if err != nil {
		return nil, err
	}
	return h.secure(ctx, nc, transport.ALPN{Default: alpn})
}

// secure runs the host's transport socket (TLS) over nc, bounded by
// the connect timeout; it closes nc when that fails. Without one, nc is
// the connection.
func (h *Host) secure(ctx context.Context, nc net.Conn, alpn transport.ALPN) (net.Conn, error) {
	cl := h.cluster
	ts := h.sock.socket
	if ts == nil {
		return nc, nil
	}
	name := h.Hostname // for auto_host_sni; empty when unknown
	hctx, cancel := context.WithTimeout(ctx, cl.ConnectTimeout)
	defer cancel()
	tc, err := ts.Client(hctx, nc, name, alpn)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}

type dedicated struct {
	net.Conn
	host *Host
	once sync.Once
}

func (d *dedicated) Close() error { return d.end(true) }

// end closes the connection and gives back its slot once; destroyed
// counts it as destroyed here (not so when another process took it).
func (d *dedicated) end(destroyed bool) error {
	err := d.Conn.Close()
	d.once.Do(func() {
		cl := d.host.cluster
		cl.Breaker.Connections.Add(-1)
		cl.Stats.CxActive.Dec()
		if destroyed {
			cl.Stats.CxDestroy.Inc()
		}
		d.host.CxActive.Add(-1)
	})
	return err
}

// File duplicates the connection's socket for a hot restart's next
// process (an error over TLS: its state is this process's).
func (d *dedicated) File() (*os.File, error) { return network.DupSocket(d.Conn) }

// Release closes the connection here once another process has taken its
// socket: no longer active here, but not destroyed.
func (d *dedicated) Release() error { return d.end(false) }

// Adopt serves a connection to h that a hot restart's previous process
// made and handed over (f is a duplicate, the caller's to close): it
// counts as active here, not as a new connection.
func (h *Host) Adopt(f *os.File) (net.Conn, error) {
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	cl := h.cluster
	cl.Breaker.Connections.Add(1)
	cl.Stats.CxActive.Inc()
	h.CxActive.Add(1)
	return &dedicated{Conn: cl.wrap(nc), host: h}, nil
}

// wrap makes a raw TCP connection to a host of c the proxy's own,
// reading at most the cluster's buffer limit at a time.
func (c *Cluster) wrap(raw net.Conn) net.Conn {
	nc := network.NewTCPConn(raw)
	if tc, ok := nc.(*network.TCPConn); ok {
		tc.ReadLimit = c.BufferLimit
	}
	return nc
}

// Host returns the cluster's host at addr, excluded ones included.
func (c *Cluster) Host(addr string) *Host {
	for _, h := range c.Hosts().All {
		if h.Addr == addr {
			return h
		}
	}
	return nil
}

// CloseWrite half-closes the connection.
func (d *dedicated) CloseWrite() error {
	if cw, ok := d.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
