// Package filter holds the filter contracts (network filters, HTTP stream
// filters) and their registries, and builds a filter from its typed_config:
// decode, validate, build, once per config; every connection or stream then
// shares the built factory.
//
// Extensions in filter/network/NAME and filter/http/NAME register from
// their init() with RegisterNetwork or RegisterHTTP; the chain order is the
// order of the config's list, never the registration order.
//
// filter may import upstream (clusters are part of the build context),
// protocol, network, stats and config; never proxy, router or an extension.
package filter
