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
// the previous process migrated reads its next request here.
func (f *Factory) Adopt(c *network.Conn, h *network.Handoff) (network.Handler, error) {
	if h.Filter != Name {
		return nil, fmt.Errorf("http_connection_manager: cannot resume a connection of %s", h.Filter)
	}
	if len(h.Pending) > 0 || len(h.Files) > 0 {
		return nil, fmt.Errorf("http_connection_manager: only idle connections move")
	}
	// An idle HTTP/1.1 connection: the codec must still take it
	// (codec_type HTTP1 or AUTO), not HTTP/2 alone or an RPC codec.
	if !f.cfg.Codec.Resumes {
		return nil, fmt.Errorf("http_connection_manager: codec %s cannot resume an idle connection", f.cfg.Codec.Name)
	}
	return proxy.ResumeConnHandler(f.cfg, c), nil
}

// Config exposes the built config (for tests and the admin config dump).
func (f *Factory) Config() *proxy.Config { return f.cfg }
