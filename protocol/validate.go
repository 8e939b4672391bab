package protocol

import "unicode/utf8"

// The request checks both codecs apply to what a client sent, so that an
// HTTP/2 request cannot carry what the HTTP/1.1 parser refuses (and then
// reach an HTTP/1.1 upstream as something else): one table per byte class,
// one function per element.

// Byte classes from RFC 9110 §5.6.2 (tchar) and RFC 3986 (authority).
var (
	tokenChars = byteTable("!#$%&'*+-.^_`|~" + digits + alpha)
	// hostChars is what uri-host [":" port] may hold: unreserved,
	// pct-encoded, sub-delims, ":" and the brackets of an IP literal.
	// "@" (userinfo), "/", "?", "#", whitespace and non-ASCII are not in it.
	hostChars   = byteTable(digits + alpha + "-._~%!$&'()*+,;=:[]")
	schemeChars = byteTable(digits + alpha + "+-.")
)

const (
	digits = "0123456789"
	alpha  = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

func byteTable(s string) (t [256]bool) {
	for i := 0; i < len(s); i++ {
		t[s[i]] = true
	}
	return t
}

// IsTokenChar reports whether c is a tchar.
func IsTokenChar(c byte) bool { return tokenChars[c] }

// TokenLen returns the length of the token at the start of b.
func TokenLen(b []byte) int {
	for i, c := range b {
		if !tokenChars[c] {
			return i
		}
	}
	return len(b)
}

// IsToken reports whether b is a non-empty token: what a method or a field
// name must be.
func IsToken[T string | []byte](b T) bool {
	if len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if !tokenChars[b[i]] {
			return false
		}
	}
	return true
}

// ValidHost reports whether v may be a Host value or an authority: host
// and port characters only (no userinfo, path, whitespace or non-ASCII).
// An empty v is valid (RFC 9112 §3.2: Host may be empty).
func ValidHost[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if !hostChars[v[i]] {
			return false
		}
	}
	return true
}

// ValidAuthorityForm reports whether t is CONNECT's "host:port" (RFC 9112
// §3.2.3).
func ValidAuthorityForm[T string | []byte](t T) bool {
	i := len(t) - 1
	for i >= 0 && t[i] != ':' {
		i--
	}
	if i <= 0 || i == len(t)-1 || !ValidHost(t[:i]) {
		return false
	}
	for j := i + 1; j < len(t); j++ {
		if t[j] < '0' || t[j] > '9' {
			return false
		}
	}
	return true
}

// ValidScheme reports whether s is a URI scheme (RFC 3986 §3.1).
func ValidScheme[T string | []byte](s T) bool {
	if len(s) == 0 || !('a' <= s[0] && s[0] <= 'z' || 'A' <= s[0] && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !schemeChars[s[i]] {
			return false
		}
	}
	return true
}

// CheckTarget returns why a request-target (or :path) is refused, or "":
// control bytes, SP and DEL; bytes above 0x7f that are not UTF-8 (a URI is
// ASCII, but clients send raw UTF-8 paths that servers take; a lone 0xff
// means nothing anywhere); and "#": a fragment is never sent (RFC 9112
// §3.2) and lets "/a#/../b" mean different paths to different servers, so
// Envoy refuses it too.
func CheckTarget[T string | []byte](t T) string {
	ascii := true
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c <= ' ' || c == 0x7f:
			return "invalid request-target"
		case c == '#':
			return "fragment in request-target"
		case c >= 0x80:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(string(t)) {
		return "invalid request-target"
	}
	return ""
}

// CheckPath returns why an HTTP/2 :path (RFC 9113 §8.3.1) is refused, or
// "": it must be origin-form ("/" ...), or "*" for OPTIONS, and pass
// CheckTarget.
func CheckPath[T string | []byte](method, path T) string {
	switch {
	case len(path) == 0:
		return "empty :path"
	case path[0] == '/':
	case len(path) == 1 && path[0] == '*' && string(method) == "OPTIONS":
	default:
		return ":path is not origin-form"
	}
	return CheckTarget(path)
}

// PercentByte decodes the escape "%XY" at b[i]; ok is false when b[i]
// begins none (not '%', or not followed by two hex digits).
func PercentByte(b []byte, i int) (c byte, ok bool) {
	if b[i] != '%' || i+2 >= len(b) {
		return 0, false
	}
	hi, ok1 := unhex(b[i+1])
	lo, ok2 := unhex(b[i+2])
	return hi<<4 | lo, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
