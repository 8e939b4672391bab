package http1

import (
	"bytes"
	"encoding/binary"

	"github.com/straitproxy/strait/protocol"
)

// Byte classes from RFC 9110 §5.5 (field-vchar); tokens and hosts are
// protocol's (protocol/validate.go), shared with HTTP/2.
var (
	// valueChars is field-vchar plus SP and HTAB: VCHAR, obs-text, SP, HTAB.
	// Every other control byte (NUL, CR, LF, DEL, ...) is refused.
	valueChars = makeRange(0x20, 0x7e, 0x80, 0xff, '\t')
)

func makeRange(lo1, hi1, lo2, hi2 int, extra byte) (t [256]bool) {
	for c := lo1; c <= hi1; c++ {
		t[c] = true
	}
	for c := lo2; c <= hi2; c++ {
		t[c] = true
	}
	t[extra] = true
	return t
}

func tokenLen(b []byte) int { return protocol.TokenLen(b) }

func isToken(b []byte) bool { return protocol.IsToken(b) }

// validValue reports whether every byte of v may appear in a field value.
// Values are most of a head, so it checks eight bytes at a time and looks
// at single bytes only in a word that holds a control byte (HTAB, say).
func validValue(v []byte) bool {
	for len(v) >= 8 {
		if hasControl(binary.LittleEndian.Uint64(v)) && !validValueBytes(v[:8]) {
			return false
		}
		v = v[8:]
	}
	return validValueBytes(v)
}

func validValueBytes(v []byte) bool {
	for _, c := range v {
		if !valueChars[c] {
			return false
		}
	}
	return true
}

// hasControl reports whether a byte of x is below 0x20 or is 0x7f, using
// the "has a byte less than n" and "has a zero byte" word tricks, which
// are exact for n <= 0x80. Bytes from 0x80 up never match.
func hasControl(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := (x - ones*0x20) &^ x & highs
	y := x ^ ones*0x7f
	del := (y - ones) &^ y & highs
	return below|del != 0
}

func validHost(v []byte) bool { return protocol.ValidHost(v) }

// nextLine splits the line at the start of b, which must hold a LF, from the
// rest. The line is returned without its CRLF; a LF without CR before it is
// an error.
func nextLine(b []byte) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, newError(400, "bare lf")
	}
	return b[:i-1], b[i+1:], nil
}

// checkPartial looks for a bare LF or a bare CR in an incomplete head, so that
// a head that never will hold CRLF CRLF fails at once instead of waiting for
// the size limit. A CR that is the last byte may still be followed by LF.
func checkPartial(b []byte) error {
	for off := 0; ; {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			break
		}
		off += i
		if off == 0 || b[off-1] != '\r' {
			return newError(400, "bare lf")
		}
		off++
	}
	for off := 0; ; {
		i := bytes.IndexByte(b[off:], '\r')
		if i < 0 {
			return nil
		}
		off += i + 1
		if off < len(b) && b[off] != '\n' {
			return newError(400, "bare cr")
		}
	}
}

// parseField splits one field line (without CRLF) into its name and its
// value with optional whitespace trimmed. The returned slices alias line.
func parseField(line []byte) (name, value []byte, err error) {
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
		return nil, nil, newError(400, "obs-fold")
	}
	n := tokenLen(line)
	switch {
	case n == len(line):
		return nil, nil, newError(400, "missing colon")
	case line[n] == ':':
	case line[n] == ' ' || line[n] == '\t':
		return nil, nil, newError(400, "whitespace before colon")
	default:
		return nil, nil, newError(400, "invalid header name")
	}
	if n == 0 {
		return nil, nil, newError(400, "invalid header name")
	}
	value = protocol.TrimOWS(line[n+1:])
	if !validValue(value) {
		return nil, nil, newError(400, "invalid header value")
	}
	return line[:n], value, nil
}

// parseContentLength accepts 1*DIGIT with at most 18 digits, so the value
// always fits an int64. Signs, spaces and comma lists are refused.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// fieldKind names the fields that framing and connection handling read.
type fieldKind uint8

const (
	kindOther fieldKind = iota
	kindHost
	kindContentLength
	kindTransferEncoding
	kindConnection
	kindExpect
	kindUpgrade
)

func classify(name []byte) fieldKind {
	switch len(name) {
	case 4:
		if protocol.EqualFold(name, "host") {
			return kindHost
		}
	case 6:
		if protocol.EqualFold(name, "expect") {
			return kindExpect
		}
	case 7:
		if protocol.EqualFold(name, "upgrade") {
			return kindUpgrade
		}
	case 10:
		if protocol.EqualFold(name, "connection") {
			return kindConnection
		}
	case 14:
		if protocol.EqualFold(name, "content-length") {
			return kindContentLength
		}
	case 17:
		if protocol.EqualFold(name, "transfer-encoding") {
			return kindTransferEncoding
		}
	}
	return kindOther
}
