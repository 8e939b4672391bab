package proxy

import (
	"errors"
	"time"

	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
)

// FilterName is the network filter the connection manager is
// (envoy.filters.network.http_connection_manager).
const FilterName = "envoy.filters.network.http_connection_manager"

// Connection migration (hot restart): an HTTP/1.1 connection idle
// between two requests moves to the next process, which reads its next
// request; one with a request in flight (or HTTP/2, or a request begun)
// finishes here. The codec holds it (protocol.IdleHolder) so that no request
// starts while the reader is held; bytes of a next request read before
// the hold took effect make it give up, and the request is served here.

var errBusy = errors.New("http: the connection is not idle")

var _ network.Migrator = (*connManager)(nil)

// Migrate implements network.Migrator.
func (cm *connManager) Migrate(wait time.Duration) (*network.Handoff, error) {
	if t := cm.tunnel.Load(); t != nil {
		return t.migrate(wait)
	}
	h, ok := cm.codec.(protocol.IdleHolder)
	if !ok || !cm.conn.Detachable() || !h.HoldIdle() {
		return nil, errBusy
	}
	cm.moving.Store(true)
	undo := func() {
		cm.moving.Store(false)
		h.ReleaseIdle()
	}
	// (A failed Detach undoes the hold before reading resumes: bytes
	// of a request read meanwhile are offered again to a codec that
	// takes them.)
	d, err := cm.conn.Detach(wait, undo)
	if err != nil {
		return nil, err
	}
	if len(d.Pending) > 0 {
		undo() // before Abort: the bytes are offered again to a codec that reads
		d.Abort()
		return nil, errBusy
	}
	return &network.Handoff{Filter: FilterName, Conn: d.File,
		Commit: d.Commit,
		Abort: func() {
			undo()
			d.Abort()
		},
	}, nil
}
