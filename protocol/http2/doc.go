// Package http2 is the HTTP/2 codec (RFC 9113): a server codec for
// downstream connections (h2c with prior knowledge; h2 once TLS hands over
// ALPN "h2") and a multiplexing client for upstream connections.
//
// The wire format comes from golang.org/x/net/http2's Framer and hpack;
// the connection and stream state machines, flow control, write
// scheduling and the defences against known attacks are this package's.
//
// Flow control is credit-based end to end: a WINDOW_UPDATE is sent only
// after the consumer (the worker relaying a request body, or the proxy
// relaying a response body) has taken the bytes, so a slow reader on one
// side bounds what the writer on the other side may send.
//
// It imports protocol and the x/net wire packages only; it must not import
// network, proxy or upstream.
package http2
