package http1

import (
	"bytes"

	"github.com/straitproxy/strait/protocol"
)

const (
	// maxChunkLine bounds a chunk-size line, extensions included.
	maxChunkLine = 4096
	// maxChunkSizeDigits keeps a chunk size below 2^60, so it never
	// overflows an int64.
	maxChunkSizeDigits = 15
)

type chunkState uint8

const (
	stateSize     chunkState = iota // expecting "HEX[;ext]\r\n"
	stateData                       // inside chunk data
	stateDataCRLF                   // expecting the CRLF after chunk data
	stateTrailer                    // inside the trailer section
)

// BodyDecoder removes framing from a body as bytes arrive. The zero value is
// unusable until Reset. A decoder holds no buffer of its own: data comes back
// as subslices of the caller's input, and nothing is ever allocated from a
// size field. In steady state (Trailers reused) it makes no allocations.
type BodyDecoder struct {
	// Trailers holds the trailer fields of a chunked body, complete once
	// Done reports true. Reset empties it, keeping its storage.
	Trailers protocol.Headers

	framing       Framing
	state         chunkState
	remaining     int64 // length: body bytes left; chunked: bytes left in the chunk
	lim           Limits
	trailerBytes  int
	trailerFields int
	done          bool
	err           error
}

// Reset prepares d for a body with framing f. contentLength is read only
// for FramingLength (a negative value counts as 0); lim bounds the trailer
// section of a chunked body as it bounds a head.
func (d *BodyDecoder) Reset(f Framing, contentLength int64, lim Limits) {
	d.Trailers.Reset()
	d.framing = f
	d.state = stateSize
	d.remaining = max(contentLength, 0)
	d.lim = lim.orDefaults()
	d.trailerBytes, d.trailerFields = 0, 0
	d.err = nil
	d.done = f == FramingNone || (f == FramingLength && d.remaining == 0)
}

// Decode consumes framing from buf and returns the next run of body bytes
// found in buf, how many bytes of buf it consumed (data plus framing), and
// done once the whole body has been consumed (for chunked: the last chunk
// and the trailer section). data is a subslice of buf, valid as long as buf
// is; d does not retain buf. consumed == 0 && len(data) == 0 && !done means
// more input is needed: call again with the unconsumed rest plus new bytes.
//
// FramingUntilClose never reports done (the caller ends it at EOF);
// FramingNone is done at once. Errors are *Error with Status 400, and stay:
// once Decode fails, it keeps failing until Reset.
func (d *BodyDecoder) Decode(buf []byte) (data []byte, consumed int, done bool, err error) {
	switch {
	case d.err != nil:
		return nil, 0, false, d.err
	case d.done:
		return nil, 0, true, nil
	}
	switch d.framing {
	case FramingLength:
		n := int(min(int64(len(buf)), d.remaining))
		d.remaining -= int64(n)
		d.done = d.remaining == 0
		return buf[:n], n, d.done, nil
	case FramingChunked:
		data, consumed, err = d.decodeChunked(buf)
		if err != nil {
			d.err = err
			return nil, 0, false, err
		}
		return data, consumed, d.done, nil
	case FramingUntilClose:
		return buf, len(buf), false, nil
	}
	d.done = true
	return nil, 0, true, nil
}

// Remaining reports the body bytes still expected with FramingLength, and -1
// for any other framing.
func (d *BodyDecoder) Remaining() int64 {
	if d.framing != FramingLength {
		return -1
	}
	return d.remaining
}

// Done reports whether the whole body has been consumed.
func (d *BodyDecoder) Done() bool { return d.done }

// decodeChunked consumes framing up to and including the next run of chunk
// data, and any framing after it that is already in buf (so the last data
// and done can come back together). An error met after data was found is
// kept for the next call, so that the data before it is delivered first.
func (d *BodyDecoder) decodeChunked(buf []byte) (data []byte, consumed int, err error) {
	found := false
	for !d.done {
		rest := buf[consumed:]
		var n int
		switch d.state {
		case stateSize:
			n, err = d.sizeLine(rest)
		case stateData:
			if found || len(rest) == 0 {
				return data, consumed, nil
			}
			n = int(min(int64(len(rest)), d.remaining))
			data, found = rest[:n], true
			if d.remaining -= int64(n); d.remaining == 0 {
				d.state = stateDataCRLF
			}
		case stateDataCRLF:
			n, err = d.dataCRLF(rest)
		case stateTrailer:
			n, err = d.trailerLine(rest)
		}
		if err != nil && found {
			d.err = err // reported by the next call
			return data, consumed, nil
		}
		if err != nil || n == 0 {
			return data, consumed, err
		}
		consumed += n
	}
	return data, consumed, nil
}

// sizeLine consumes "HEX[;ext]\r\n" and returns its length, or 0 when the
// line is not complete yet.
func (d *BodyDecoder) sizeLine(b []byte) (int, error) {
	if len(b) > 0 && unhex(b[0]) < 0 {
		return 0, newError(400, "invalid chunk size")
	}
	i := bytes.IndexByte(b[:min(len(b), maxChunkLine)], '\n')
	if i < 0 {
		if len(b) >= maxChunkLine {
			return 0, newError(400, "chunk line too long")
		}
		return 0, nil
	}
	if i == 0 || b[i-1] != '\r' {
		return 0, newError(400, "bare lf")
	}
	size, err := parseChunkSize(b[:i-1])
	if err != nil {
		return 0, err
	}
	if size == 0 {
		d.state = stateTrailer
	} else {
		d.state, d.remaining = stateData, size
	}
	return i + 1, nil
}

func (d *BodyDecoder) dataCRLF(b []byte) (int, error) {
	if len(b) > 0 && b[0] != '\r' || len(b) > 1 && b[1] != '\n' {
		return 0, newError(400, "missing crlf after chunk data")
	}
	if len(b) < 2 {
		return 0, nil
	}
	d.state = stateSize
	return 2, nil
}

// trailerLine consumes one line of the trailer section, the final empty
// line included, and returns its length, or 0 when it is not complete yet.
// The section is bounded like a head: MaxHeaderBytes and MaxHeaders.
func (d *BodyDecoder) trailerLine(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	budget := d.lim.MaxHeaderBytes - d.trailerBytes
	i := bytes.IndexByte(b[:min(len(b), budget)], '\n')
	if i < 0 {
		if len(b) >= budget {
			return 0, newError(400, "trailer section too large")
		}
		return 0, nil
	}
	line, _, err := nextLine(b[:i+1])
	if err != nil {
		return 0, err
	}
	d.trailerBytes += i + 1
	if len(line) == 0 {
		d.done = true
		return i + 1, nil
	}
	name, value, err := parseField(line)
	if err != nil {
		return 0, err
	}
	if d.trailerFields++; d.trailerFields > d.lim.MaxHeaders {
		return 0, newError(400, "too many trailer fields")
	}
	d.Trailers.Add(name, value)
	return i + 1, nil
}

// parseChunkSize parses a chunk-size line without its CRLF: 1*HEXDIG, then
// chunk extensions, which are checked and ignored.
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		v := unhex(line[i])
		if v < 0 {
			break
		}
		if i == maxChunkSizeDigits {
			return 0, newError(400, "chunk size too large")
		}
		n = n<<4 | int64(v)
	}
	if i == 0 {
		return 0, newError(400, "invalid chunk size")
	}
	if !validChunkExt(line[i:]) {
		return 0, newError(400, "invalid chunk extension")
	}
	return n, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// validChunkExt checks *( BWS ";" BWS name [ BWS "=" BWS value ] ) where
// value is a token or a quoted-string (RFC 9112 §7.1.1).
func validChunkExt(b []byte) bool {
	for len(b) > 0 {
		b = skipWS(b)
		if len(b) == 0 || b[0] != ';' {
			return false
		}
		b = skipWS(b[1:])
		n := tokenLen(b)
		if n == 0 {
			return false
		}
		b = b[n:]
		if r := skipWS(b); len(r) > 0 && r[0] == '=' {
			var ok bool
			if b, ok = cutExtValue(skipWS(r[1:])); !ok {
				return false
			}
		}
	}
	return true
}

// cutExtValue removes a token or a quoted-string from the front of b.
func cutExtValue(b []byte) (rest []byte, ok bool) {
	if len(b) == 0 {
		return nil, false
	}
	if b[0] != '"' {
		n := tokenLen(b)
		return b[n:], n > 0
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[i+1:], true
		case c == '\\':
			// quoted-pair: "\" followed by HTAB, SP, VCHAR or obs-text.
			if i++; i == len(b) || !valueChars[b[i]] {
				return nil, false
			}
		case !valueChars[c]:
			return nil, false
		}
	}
	return nil, false
}

func skipWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
