package upstream

import (
	"context"
	"errors"
	"net"
	"sync"
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
	c, err := h.pool.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &dedicated{Conn: c.Conn, host: h}, nil
}

type dedicated struct {
	net.Conn
	host *Host
	once sync.Once
}

func (d *dedicated) Close() error {
	err := d.Conn.Close()
	d.once.Do(func() {
		cl := d.host.cluster
		cl.Breaker.Connections.Add(-1)
		cl.Stats.CxActive.Dec()
		cl.Stats.CxDestroy.Inc()
		d.host.CxActive.Add(-1)
	})
	return err
}

// CloseWrite half-closes the connection.
func (d *dedicated) CloseWrite() error {
	if cw, ok := d.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
