// Package router is the envoy.filters.http.router stream filter: the
// terminal filter of an HTTP chain. Routing and forwarding are the proxy
// engine's phases; this filter marks where the chain ends and carries the
// router's own options. It must not import other extensions.
package router

import (
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"github.com/straitproxy/strait/filter"
)

// Factory is the built router filter.
type Factory struct {
	cfg *routerv3.Router
}

var (
	_ filter.HTTPFactory = (*Factory)(nil)
	_ filter.Terminal    = (*Factory)(nil)
	_ filter.ChildSpans  = (*Factory)(nil)
)

// IsTerminal marks the end of the chain.
func (*Factory) IsTerminal() {}

// StartChildSpan implements filter.ChildSpans.
func (f *Factory) StartChildSpan() bool { return f.cfg.GetStartChildSpan() }

// New is never called for the terminal filter; it returns a filter with
// no phases.
func (*Factory) New() filter.StreamFilter { return struct{}{} }
