// Package listener builds listeners from Envoy Listener resources, binds
// them, accepts connections, matches each to a filter chain, attaches the
// chain's network filters and hands the connection to its I/O model. It
// drains: stop accepting, ask every connection to finish, then close.
//
// listener imports filter, network, stats and config; extensions are found
// through the filter registry.
package listener
