package http1

import (
	"strconv"

	"github.com/straitproxy/strait/protocol"
)

// The encoders write what the parsers accept, whatever filters put into h:
// a field whose name is not a token (a pseudo-header included) is dropped,
// control bytes in a value are written as SP, and control bytes and SP in
// the request-target are percent-encoded, so no header edit can split a
// message. Both decoders accept only token methods (protocol.IsToken); a
// byte of ":method" that is not a token byte is percent-encoded all the
// same, so no method can add to the request line.
//
// Framing fields are the encoder's: Transfer-Encoding from h is never
// written, and Content-Length from h is written only with FramingNone and
// FramingUntilClose (a response to HEAD, say, keeps its Content-Length). With
// FramingLength and FramingChunked the encoder writes its own
// "content-length: N" or "transfer-encoding: chunked".

// AppendRequestHead appends an HTTP/1.1 request head built from h to dst
// and returns the extended slice; it allocates only when dst must grow, and
// does not retain h's slices.
//
// The request line is ":method", then ":path" (":authority" for CONNECT
// without ":path"; "/" when both are absent), then "HTTP/1.1". ":authority"
// is written as the Host field and a "host" field in h is then skipped;
// with neither, an empty Host is written, as RFC 9112 §3.2 asks.
func AppendRequestHead(dst []byte, h *protocol.Headers, f Framing, contentLength int64) []byte {
	method := h.Method()
	auth, hasAuth := h.Get(protocol.Authority)
	dst = appendMethod(dst, method)
	dst = append(dst, ' ')
	switch path := h.Path(); {
	case len(path) > 0:
		dst = appendTarget(dst, path)
	case string(method) == "CONNECT" && len(auth) > 0:
		dst = appendTarget(dst, auth)
	default:
		dst = append(dst, '/')
	}
	dst = append(dst, " HTTP/1.1\r\n"...)
	switch {
	case hasAuth:
		dst = append(dst, "host: "...)
		dst = appendValue(dst, auth)
		dst = append(dst, "\r\n"...)
	case !h.Has("host"):
		dst = append(dst, "host: \r\n"...)
	}
	dst = appendFields(dst, h, f, hasAuth)
	dst = appendFraming(dst, f, contentLength)
	return append(dst, "\r\n"...)
}

// AppendResponseHead appends a response head built from h to dst and
// returns the extended slice; it allocates only when dst must grow, and
// does not retain h's slices. The status line is "HTTP/1.<minor> <:status> <reason>" with minor 0 or 1
// (any other value writes 1), the reason from StatusText or "Unknown". A
// missing or malformed ":status" is written as 500. With minor 0 the
// caller must not pass FramingChunked.
func AppendResponseHead(dst []byte, h *protocol.Headers, minor int, f Framing, contentLength int64) []byte {
	if minor == 0 {
		dst = append(dst, "HTTP/1.0 "...)
	} else {
		dst = append(dst, "HTTP/1.1 "...)
	}
	code := h.StatusCode()
	if code < 100 {
		code = 500
	}
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	if reason := StatusText(code); reason != "" {
		dst = append(dst, reason...)
	} else {
		dst = append(dst, "Unknown"...)
	}
	dst = append(dst, "\r\n"...)
	dst = appendFields(dst, h, f, false)
	dst = appendFraming(dst, f, contentLength)
	return append(dst, "\r\n"...)
}

// AppendChunk appends p as one chunk, "<hex size>\r\n" p "\r\n", to dst and
// returns the extended slice. p is copied, not retained. An empty p appends
// nothing, since a zero-size chunk would end the body.
func AppendChunk(dst, p []byte) []byte {
	if len(p) == 0 {
		return dst
	}
	dst = strconv.AppendUint(dst, uint64(len(p)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, p...)
	return append(dst, "\r\n"...)
}

// AppendLastChunk appends the last chunk, "0\r\n", the trailer fields and
// the final "\r\n" to dst and returns the extended slice. trailers may be
// nil and is not retained. Fields that must not be trailers (RFC 9110
// §6.5.1) and that a recipient could mistake for framing or routing
// (Transfer-Encoding, Content-Length, Host) are not written.
func AppendLastChunk(dst []byte, trailers *protocol.Headers) []byte {
	dst = append(dst, "0\r\n"...)
	if trailers != nil {
		dst = appendFields(dst, trailers, FramingChunked, true)
	}
	return append(dst, "\r\n"...)
}

// appendFields writes the regular fields of h, leaving out what the
// framing f makes the encoder's, and "host" when skipHost is set.
func appendFields(dst []byte, h *protocol.Headers, f Framing, skipHost bool) []byte {
	for i := 0; i < h.NumSlots(); i++ {
		name, value, ok := h.Slot(i)
		if !ok || skipField(name, f, skipHost) {
			continue
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		dst = appendValue(dst, value)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

func skipField(name []byte, f Framing, skipHost bool) bool {
	switch {
	case !isToken(name): // pseudo-headers too: ':' is not a token byte
		return true
	case string(name) == "transfer-encoding":
		return true
	case string(name) == "content-length":
		return f == FramingLength || f == FramingChunked
	case string(name) == "host":
		return skipHost
	}
	return false
}

func appendFraming(dst []byte, f Framing, contentLength int64) []byte {
	switch f {
	case FramingLength:
		dst = append(dst, "content-length: "...)
		dst = strconv.AppendInt(dst, max(contentLength, 0), 10)
		dst = append(dst, "\r\n"...)
	case FramingChunked:
		dst = append(dst, "transfer-encoding: chunked\r\n"...)
	}
	return dst
}

// appendValue writes v with every byte a field value may not hold (CR, LF,
// NUL and the other controls but HTAB) replaced by SP.
func appendValue(dst, v []byte) []byte {
	if validValue(v) {
		return append(dst, v...)
	}
	for _, c := range v {
		if !valueChars[c] {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}

// appendTarget writes a request-target with control bytes and SP
// percent-encoded.
func appendTarget(dst, t []byte) []byte {
	clean := true
	for _, c := range t {
		clean = clean && c > ' ' && c != 0x7f
	}
	if clean {
		return append(dst, t...)
	}
	const hex = "0123456789ABCDEF"
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// appendMethod writes a method, percent-encoding any byte that is not a
// token byte.
func appendMethod(dst, m []byte) []byte {
	if protocol.IsToken(m) {
		return append(dst, m...)
	}
	const hex = "0123456789ABCDEF"
	for _, c := range m {
		if protocol.IsTokenChar(c) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}
