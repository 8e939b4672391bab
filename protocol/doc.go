// Package protocol is the codec contract: every protocol (HTTP/1.1 here;
// HTTP/2 and Dubbo later) turns bytes into streams of headers, data and
// trailers and back, behind the interfaces in this package, and registers
// itself by name from its init(). The connection manager, stream filters,
// router and upstream code see only these interfaces and Headers.
//
// protocol imports nothing from this module but internal packages.
package protocol
