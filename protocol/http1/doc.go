// Package http1 is the HTTP/1.1 codec. Its wire layer (RFC 9112) parses
// request and response heads into protocol.Headers, removes body framing,
// and encodes heads and chunks; the codec glue (register.go and the server
// and client streams) drives that layer from a connection.
//
// The wire layer (parse.go, target.go, field.go, framing.go, body.go,
// encode.go, status.go) is pure: no I/O, no goroutines, no logging, no
// state between calls beyond a BodyDecoder. It imports only the standard
// library and protocol. Like every codec, the package must not import proxy,
// filter, router, upstream or another codec.
//
// # Message format
//
//	request-line     method SP request-target SP HTTP-version CRLF
//	                 "GET /index.html?q=1 HTTP/1.1\r\n"
//	status-line      HTTP-version SP status-code SP [ reason-phrase ] CRLF
//	                 "HTTP/1.1 200 OK\r\n"
//	field lines      *( field-name ":" OWS field-value OWS CRLF )
//	                 "Host: example.com\r\n"
//	empty line       CRLF
//	body             framed as below
//
//	+------------+---------------------+------+-------------------+
//	| start line | field lines         | CRLF | body (maybe none) |
//	+------------+---------------------+------+-------------------+
//	|<-- head: at most Limits.MaxHeaderBytes -->|
//
// A chunked body is a run of chunks, a last chunk and a trailer section:
//
//	chunk            1*HEXDIG *( ";" ext-name [ "=" ext-value ] ) CRLF
//	                 chunk-data CRLF            "5\r\nhello\r\n"
//	last-chunk       1*"0" [ chunk-ext ] CRLF   "0\r\n"
//	trailer section  *( field-line CRLF ) CRLF  "x-sum: 9\r\n\r\n"
//
// # Framing (RFC 9112 §6.3)
//
// The length of a body is decided once, from the head, in this order:
//
//  1. A response to HEAD, and a 1xx, 204 or 304 response, has no body.
//  2. A 2xx response to CONNECT turns the connection into a tunnel: bytes
//     flow until close.
//  3. Transfer-Encoding: chunked means chunked framing. It must be the only
//     coding, sent in one field; anything else is rejected (501 for an
//     unknown coding in a request, 400 for a malformed list, 502 for an
//     upstream response), as Envoy does.
//  4. Content-Length: N means exactly N bytes.
//  5. Otherwise a request has no body and a response runs until close.
//
// A message that carries both Transfer-Encoding and Content-Length, more
// than one Content-Length in a request, or any malformed framing field is
// rejected rather than guessed at: two parsers that guess differently are
// how request smuggling happens. For the same reason lines must end in CRLF
// (a bare LF or bare CR is an error), obs-fold is refused, and a field name
// may not be followed by whitespace before its colon.
//
// # Buffers
//
// No function here retains a buffer it is given. Parsed fields are copied
// into the caller's protocol.Headers; body data returned by
// BodyDecoder.Decode is a subslice of the caller's input, valid as long as
// that input is. The Append functions write to dst and return it, as
// strconv.Append* do.
package http1
