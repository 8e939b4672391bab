package http1

import (
	"bytes"
	"errors"
	"strconv"

	"github.com/straitproxy/strait/protocol"
)

// Default limits, used where a Limits field is zero or negative.
const (
	// DefaultMaxHeaderBytes is Envoy's max_request_headers_kb default, 60 KiB.
	DefaultMaxHeaderBytes = 60 << 10
	// DefaultMaxHeaders is the default bound on the number of field lines.
	DefaultMaxHeaders = 100
)

// maxEmptyLines bounds the empty lines skipped before a request line
// (RFC 9112 §2.2 asks servers to ignore at least one).
const maxEmptyLines = 4

// Limits bounds what a head (or a trailer section) may hold.
type Limits struct {
	// MaxHeaderBytes bounds the whole head, start line and final CRLF
	// included; 0 means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of field lines; 0 means DefaultMaxHeaders.
	MaxHeaders int
}

func (l Limits) orDefaults() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	return l
}

// ErrNeedMore is returned by the head parsers while the buffer does not yet
// hold a complete head. Call again once more bytes have arrived.
var ErrNeedMore = errors.New("http1: incomplete message head")

// Error is a protocol violation. Status is the HTTP status a server answers
// it with (400, 417, 431, 501, 505; 502 for a malformed upstream response)
// and Reason is a short lowercase description such as
// "duplicate content-length".
type Error struct {
	Status int
	Reason string
}

// Error returns "http1: " followed by the reason and the status.
func (e *Error) Error() string {
	return "http1: " + e.Reason + " (" + strconv.Itoa(e.Status) + ")"
}

func newError(status int, reason string) error {
	return &Error{Status: status, Reason: reason}
}

// Framing says how the end of a body is found.
type Framing uint8

// Framing values.
const (
	// FramingNone means the message has no body.
	FramingNone Framing = iota
	// FramingLength means a body of exactly Content-Length bytes.
	FramingLength
	// FramingChunked means the chunked transfer coding.
	FramingChunked
	// FramingUntilClose means the body runs until the connection closes.
	FramingUntilClose
)

// String returns the name of f.
func (f Framing) String() string {
	switch f {
	case FramingNone:
		return "none"
	case FramingLength:
		return "length"
	case FramingChunked:
		return "chunked"
	case FramingUntilClose:
		return "until-close"
	}
	return "framing(" + strconv.Itoa(int(f)) + ")"
}

// Pseudo-header names as byte slices, so Headers.Add needs no conversion.
var (
	methodName    = []byte(protocol.Method)
	pathName      = []byte(protocol.Path)
	authorityName = []byte(protocol.Authority)
	schemeName    = []byte(protocol.Scheme)
	statusName    = []byte(protocol.Status)
)

// RequestInfo is what ParseRequestHead learned about a request besides its
// fields.
type RequestInfo struct {
	Framing       Framing
	ContentLength int64 // -1 unless Framing is FramingLength
	Minor         int   // 0 or 1: HTTP/1.0 or HTTP/1.1
	// KeepAlive is the version's default adjusted by Connection: close
	// or Connection: keep-alive.
	KeepAlive bool
	// ExpectContinue is set by Expect: 100-continue on HTTP/1.1.
	ExpectContinue bool
	// Upgrade is set when Connection holds "upgrade" and Upgrade is present.
	Upgrade bool
	HeadLen int // bytes of the head, the n that ParseRequestHead returns
}

// ResponseInfo is what ParseResponseHead learned about a response besides
// its fields.
type ResponseInfo struct {
	Status        int
	Framing       Framing
	ContentLength int64 // -1 unless Framing is FramingLength
	Minor         int   // 0 or 1
	// KeepAlive is the version's default adjusted by Connection; it is
	// false when the body runs until close.
	KeepAlive bool
}

// ParseRequestHead parses the request head at the start of buf into h and
// returns its length n. It returns ErrNeedMore while buf holds no complete
// head (a *Error with Status 431 once buf is longer than MaxHeaderBytes), and
// a *Error for any protocol violation; h is unspecified after an error.
//
// h is reset and gets ":method", then ":scheme" (absolute-form only),
// ":authority" (from the request-target, else from Host, which is then not
// added as a field), ":path" (absent for CONNECT), then every other field in
// order with its name lowercased and its value trimmed. Nothing aliases buf
// and buf is not retained. With an h that has been used before, parsing a
// request makes no allocations.
//
// The parser keeps no state, so each call scans buf again (at most
// MaxHeaderBytes of it, mostly with bytes.Index); call it again only when
// new bytes have arrived.
func ParseRequestHead(buf []byte, h *protocol.Headers, lim Limits) (n int, info RequestInfo, err error) {
	lim = lim.orDefaults()
	start, err := skipEmptyLines(buf)
	if err != nil {
		return 0, info, err
	}
	n, err = headEnd(buf, start, lim.MaxHeaderBytes)
	if err == ErrNeedMore {
		if lerr := checkRequestLine(buf[start:]); lerr != nil {
			return 0, info, lerr
		}
	}
	if err != nil {
		return 0, info, err
	}
	h.Reset()
	line, rest, err := nextLine(buf[start:n])
	if err != nil {
		return 0, info, err
	}
	minor, hostInTarget, err := parseRequestLine(line, h)
	if err != nil {
		return 0, info, err
	}
	var s summary
	if err := parseFields(rest, h, lim, true, &s); err != nil {
		return 0, info, err
	}
	if info, err = s.request(minor); err != nil {
		return 0, RequestInfo{}, err
	}
	if !hostInTarget {
		setAuthority(h, &s)
	}
	info.HeadLen = n
	return n, info, nil
}

// setAuthority fills the ":authority" placeholder from Host, or removes it.
func setAuthority(h *protocol.Headers, s *summary) {
	if s.hosts == 0 {
		h.Del(protocol.Authority)
		return
	}
	h.SetBytes(protocol.Authority, s.host)
}

// ParseResponseHead parses the response head at the start of buf into h and
// returns its length n. headRequest and connectRequest describe the request
// it answers, which decides the framing (RFC 9112 §6.3). Errors are as for
// ParseRequestHead except that every *Error has Status 502: a proxy answers
// a malformed upstream response with Bad Gateway.
//
// h is reset and gets ":status" then every field in order. Nothing aliases
// buf and buf is not retained.
func ParseResponseHead(buf []byte, h *protocol.Headers, lim Limits, headRequest bool, connectRequest bool) (n int, info ResponseInfo, err error) {
	n, info, err = parseResponseHead(buf, h, lim.orDefaults(), headRequest, connectRequest)
	if e, ok := err.(*Error); ok {
		e.Status = 502
	}
	if err != nil {
		return 0, ResponseInfo{}, err
	}
	return n, info, nil
}

func parseResponseHead(buf []byte, h *protocol.Headers, lim Limits, headRequest, connectRequest bool) (int, ResponseInfo, error) {
	var info ResponseInfo
	n, err := headEnd(buf, 0, lim.MaxHeaderBytes)
	if err != nil {
		return 0, info, err
	}
	h.Reset()
	line, rest, err := nextLine(buf[:n])
	if err != nil {
		return 0, info, err
	}
	if info.Minor, info.Status, err = parseStatusLine(line); err != nil {
		return 0, info, err
	}
	h.Add(statusName, line[9:12])
	var s summary
	if err := parseFields(rest, h, lim, false, &s); err != nil {
		return 0, info, err
	}
	info.Framing, info.ContentLength, err = s.responseFraming(info.Status, info.Minor, headRequest, connectRequest)
	if err != nil {
		return 0, info, err
	}
	info.KeepAlive = s.keepAlive(info.Minor) && info.Framing != FramingUntilClose
	return n, info, nil
}

// skipEmptyLines returns the offset of the first byte after the CRLFs that
// may precede a request line.
func skipEmptyLines(buf []byte) (int, error) {
	i := 0
	for len(buf)-i >= 2 && buf[i] == '\r' && buf[i+1] == '\n' {
		i += 2
		if i/2 > maxEmptyLines {
			return 0, newError(400, "too many empty lines before request line")
		}
	}
	return i, nil
}

var crlfcrlf = []byte("\r\n\r\n")

// headEnd returns the length of the head that begins at buf[start:], the
// final CRLF CRLF included.
func headEnd(buf []byte, start, limit int) (int, error) {
	win := buf
	if len(win) > limit {
		win = win[:limit]
	}
	if start > len(win) {
		start = len(win)
	}
	if i := bytes.Index(win[start:], crlfcrlf); i >= 0 {
		return start + i + 4, nil
	}
	if err := checkPartial(win[start:]); err != nil {
		return 0, err
	}
	if len(buf) > limit {
		return 0, newError(431, "header section too large")
	}
	return 0, ErrNeedMore
}

// checkRequestLine refuses, before the head is complete, a request line
// that is complete and lacks a version: an HTTP/0.9 request ("GET /")
// would otherwise wait for a blank line that never comes.
func checkRequestLine(b []byte) error {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil // incomplete, or a bare LF that checkPartial reports
	}
	if bytes.Count(b[:i-1], sp) < 2 {
		return newError(400, "malformed request line (HTTP/0.9 is not supported)")
	}
	return nil
}

var sp = []byte(" ")

// parseVersion accepts "HTTP/1.1" and "HTTP/1.0", and takes a later 1.x
// as 1.1 (RFC 9110 §6.2: the highest minor version we support). Another
// well-formed version is 505; anything else is 400.
func parseVersion(v []byte) (minor int, err error) {
	if len(v) == 8 && string(v[:7]) == "HTTP/1." && isDigit(v[7]) {
		return min(int(v[7]-'0'), 1), nil
	}
	if len(v) == 8 && string(v[:5]) == "HTTP/" && isDigit(v[5]) && v[6] == '.' && isDigit(v[7]) {
		return 0, newError(505, "unsupported http version")
	}
	return 0, newError(400, "invalid http version")
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseStatusLine parses "HTTP/1.x SSS[ reason]".
func parseStatusLine(line []byte) (minor, status int, err error) {
	if len(line) < 12 || line[8] != ' ' {
		return 0, 0, newError(400, "invalid status line")
	}
	if minor, err = parseVersion(line[:8]); err != nil {
		return 0, 0, err
	}
	for _, c := range line[9:12] {
		if !isDigit(c) {
			return 0, 0, newError(400, "invalid status code")
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 || status > 599 {
		return 0, 0, newError(400, "invalid status code")
	}
	if len(line) > 12 && (line[12] != ' ' || !validValue(line[13:])) {
		return 0, 0, newError(400, "invalid reason phrase")
	}
	return minor, status, nil
}

// parseFields parses the field lines in b, which ends with the empty line
// of a complete head, into h and s. With skipHost, Host fields are noted in
// s but not added to h.
func parseFields(b []byte, h *protocol.Headers, lim Limits, skipHost bool, s *summary) error {
	for {
		line, rest, err := nextLine(b)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		b = rest
		name, value, err := parseField(line)
		if err != nil {
			return err
		}
		if s.fields++; s.fields > lim.MaxHeaders {
			return newError(431, "too many header fields")
		}
		k := classify(name)
		s.note(k, value)
		if k == kindHost && skipHost {
			continue
		}
		h.Add(name, value)
	}
}

// maxMethodLen bounds the method that LooksLikeRequest recognizes.
const maxMethodLen = 20

// LooksLikeRequest reports whether prefix, the first bytes of a connection,
// starts like an HTTP/1 request: 1 to 20 upper-case letters and a SP. With
// needMore it cannot tell yet. It is for protocol detection on a shared
// port and does not retain prefix.
func LooksLikeRequest(prefix []byte) (match, needMore bool) {
	for i, c := range prefix {
		switch {
		case c == ' ' && i > 0:
			return true, false
		case c < 'A' || c > 'Z' || i == maxMethodLen:
			return false, false
		}
	}
	return false, true
}
