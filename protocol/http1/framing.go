package http1

import (
	"bytes"

	"github.com/straitproxy/strait/protocol"
)

// summary collects, while fields are parsed, the fields that decide framing
// and connection handling. Its slices alias the buffer being parsed and do
// not outlive the parse call.
type summary struct {
	fields  int
	hosts   int
	host    []byte
	cls     int
	cl      []byte
	clDiff  bool // a later Content-Length differs from the first
	tes     int
	te      []byte
	expects int
	expect  []byte

	connClose, connKeepAlive, connUpgrade, upgrade bool
}

func (s *summary) note(k fieldKind, v []byte) {
	switch k {
	case kindHost:
		s.hosts++
		s.host = v
	case kindContentLength:
		if s.cls > 0 && !bytes.Equal(s.cl, v) {
			s.clDiff = true
		}
		s.cls++
		s.cl = v
	case kindTransferEncoding:
		s.tes++
		s.te = v
	case kindConnection:
		s.connClose = s.connClose || protocol.ListHasToken(v, "close")
		s.connKeepAlive = s.connKeepAlive || protocol.ListHasToken(v, "keep-alive")
		s.connUpgrade = s.connUpgrade || protocol.ListHasToken(v, "upgrade")
	case kindExpect:
		s.expects++
		s.expect = v
	case kindUpgrade:
		s.upgrade = true
	}
}

// keepAlive applies Connection: close wins over keep-alive, which only
// matters for HTTP/1.0.
func (s *summary) keepAlive(minor int) bool {
	if s.connClose {
		return false
	}
	return minor == 1 || s.connKeepAlive
}

// request checks the fields of a request as a whole and decides framing.
func (s *summary) request(minor int) (RequestInfo, error) {
	info := RequestInfo{Minor: minor, ContentLength: -1}
	if err := s.checkHost(minor); err != nil {
		return info, err
	}
	var err error
	if info.Framing, info.ContentLength, err = s.requestFraming(minor); err != nil {
		return info, err
	}
	if s.expects > 0 {
		if s.expects > 1 || !protocol.EqualFold(s.expect, "100-continue") {
			return info, newError(417, "unsupported expectation")
		}
		// RFC 9110 §10.1.1: 100-continue in an HTTP/1.0 request is ignored.
		info.ExpectContinue = minor == 1
	}
	info.KeepAlive = s.keepAlive(minor)
	info.Upgrade = s.connUpgrade && s.upgrade
	return info, nil
}

// checkHost applies RFC 9112 §3.2: exactly one valid Host in HTTP/1.1, at
// most one in HTTP/1.0.
func (s *summary) checkHost(minor int) error {
	switch {
	case s.hosts > 1:
		return newError(400, "duplicate host")
	case s.hosts == 0 && minor == 1:
		return newError(400, "missing host")
	case s.hosts == 1 && !validHost(s.host):
		return newError(400, "invalid host")
	}
	return nil
}

func (s *summary) requestFraming(minor int) (Framing, int64, error) {
	switch {
	case s.tes > 0 && s.cls > 0:
		return 0, -1, newError(400, "content-length with transfer-encoding")
	case s.tes > 0 && minor == 0:
		// RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
		return 0, -1, newError(400, "transfer-encoding in http/1.0")
	case s.tes > 1:
		return 0, -1, newError(400, "multiple transfer-encoding")
	case s.tes == 1:
		if err := checkTransferEncoding(s.te); err != nil {
			return 0, -1, err
		}
		return FramingChunked, -1, nil
	case s.cls > 1:
		return 0, -1, newError(400, "duplicate content-length")
	case s.cls == 1:
		n, ok := parseContentLength(s.cl)
		if !ok {
			return 0, -1, newError(400, "invalid content-length")
		}
		return FramingLength, n, nil
	}
	return FramingNone, -1, nil
}

// checkTransferEncoding accepts only the value "chunked". A malformed list,
// or one where chunked is not the single final coding, is 400 (RFC 9112
// §6.3 makes that a MUST); a well-formed list of codings we do not
// implement ("gzip", "identity", "gzip, chunked") is 501 (RFC 9112 §6.1).
func checkTransferEncoding(v []byte) error {
	if protocol.EqualFold(v, "chunked") {
		return nil
	}
	if len(v) == 0 {
		return newError(400, "invalid transfer-encoding")
	}
	chunked, last := 0, false
	for len(v) > 0 {
		var item []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
			if len(v) == 0 {
				return newError(400, "invalid transfer-encoding")
			}
		} else {
			item, v = v, nil
		}
		item = protocol.TrimOWS(item)
		if !isToken(item) {
			return newError(400, "invalid transfer-encoding")
		}
		last = protocol.EqualFold(item, "chunked")
		if last {
			chunked++
		}
	}
	if chunked > 0 && (!last || chunked > 1) {
		return newError(400, "chunked not final")
	}
	return newError(501, "unsupported transfer-encoding")
}

// responseFraming applies RFC 9112 §6.3 to a response. Errors are built
// with status 400 and turned into 502 by ParseResponseHead.
func (s *summary) responseFraming(status, minor int, headRequest, connectRequest bool) (Framing, int64, error) {
	if connectRequest && status/100 == 2 {
		// A tunnel: Content-Length and Transfer-Encoding must be ignored.
		return FramingUntilClose, -1, nil
	}
	f, n, err := s.responseBody(minor)
	if err != nil {
		return 0, -1, err
	}
	if headRequest || status < 200 || status == 204 || status == 304 {
		return FramingNone, -1, nil
	}
	return f, n, nil
}

func (s *summary) responseBody(minor int) (Framing, int64, error) {
	switch {
	case s.tes > 0 && s.cls > 0:
		return 0, -1, newError(400, "content-length with transfer-encoding")
	case s.tes > 0 && minor == 0:
		return 0, -1, newError(400, "transfer-encoding in http/1.0")
	case s.tes > 0:
		// Only chunked alone: the encoder rewrites framing and would drop
		// any other coding (Envoy refuses these responses too).
		if s.tes > 1 || !protocol.EqualFold(s.te, "chunked") {
			return 0, -1, newError(400, "unsupported transfer-encoding")
		}
		return FramingChunked, -1, nil
	case s.clDiff:
		// RFC 9110 §8.6 lets a recipient accept repeated identical values.
		return 0, -1, newError(400, "duplicate content-length")
	case s.cls > 0:
		n, ok := parseContentLength(s.cl)
		if !ok {
			return 0, -1, newError(400, "invalid content-length")
		}
		return FramingLength, n, nil
	}
	return FramingUntilClose, -1, nil
}
