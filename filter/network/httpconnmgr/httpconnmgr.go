// Package httpconnmgr is the envoy.filters.network.http_connection_manager
// network filter: it decodes HTTP on a connection and runs each request
// through the proxy engine. It must not import other extensions.
package httpconnmgr

import (
	"fmt"

	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/proxy"
)

// Factory is a built connection manager.
type Factory struct {
	cfg *proxy.Config
}

var _ filter.NetworkFactory = (*Factory)(nil)

// Terminal: the connection manager consumes the connection's bytes.
func (*Factory) Terminal() bool { return true }

// NewHandler attaches a connection manager to c.
func (f *Factory) NewHandler(c *network.Conn, _ network.Handler) (network.Handler, error) {
	return proxy.NewConnHandler(f.cfg, c), nil
}

var _ filter.NetworkAdopter = (*Factory)(nil)

// Adopt implements filter.NetworkAdopter: an idle HTTP/1.1 connection
// the previous process migrated reads its next request here; a tunnel
// (an upgraded connection, with its upstream connection) goes on.
func (f *Factory) Adopt(c *network.Conn, h *network.Handoff) (network.Handler, error) {
	if h.Filter != Name {
		return nil, fmt.Errorf("http_connection_manager: cannot resume a connection of %s", h.Filter)
	}
	return proxy.ResumeConnHandler(f.cfg, c, h)
}

// Config exposes the built config (for tests and the admin config dump).
func (f *Factory) Config() *proxy.Config { return f.cfg }
