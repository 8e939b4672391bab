package accesslog

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultFormat is Envoy's default access log format.
const DefaultFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

type opKind uint8

const (
	opLiteral opKind = iota
	opStartTime
	opReq
	opResp
	opTrailer
	opProtocol
	opResponseCode
	opResponseCodeDetails
	opResponseFlags
	opResponseFlagsLong
	opBytesReceived
	opBytesSent
	opDuration
	opRequestDuration
	opResponseDuration
	opResponseTxDuration
	opUpstreamHost
	opUpstreamCluster
	opUpstreamLocalAddress
	opUpstreamTransportFailureReason
	opUpstreamRequestAttemptCount
	opDownstreamRemoteAddress
	opDownstreamRemoteAddressWithoutPort
	opDownstreamRemotePort
	opDownstreamDirectRemoteAddress
	opDownstreamDirectRemoteAddressWithoutPort
	opDownstreamLocalAddress
	opDownstreamLocalAddressWithoutPort
	opDownstreamLocalPort
	opRequestedServerName
	opPeerURISAN
	opPeerSubject
	opPeerFingerprint256
	opPeerSerial
	opTLSVersion
	opTLSCipher
	opTLSSessionID
	opRouteName
	opTerminationDetails
	opConnectionID
	opHostname
)

// operators are the command operators by name; args says whether the
// operator takes "(...)" (1: required, 2: optional).
var operators = map[string]struct {
	kind opKind
	args int
}{
	"START_TIME": {opStartTime, 2}, "REQ": {opReq, 1}, "RESP": {opResp, 1}, "TRAILER": {opTrailer, 1},
	"PROTOCOL": {opProtocol, 0}, "RESPONSE_CODE": {opResponseCode, 0}, "RESPONSE_CODE_DETAILS": {opResponseCodeDetails, 0},
	"RESPONSE_FLAGS": {opResponseFlags, 0}, "RESPONSE_FLAGS_LONG": {opResponseFlagsLong, 0},
	"BYTES_RECEIVED": {opBytesReceived, 0}, "BYTES_SENT": {opBytesSent, 0},
	"DURATION": {opDuration, 0}, "REQUEST_DURATION": {opRequestDuration, 0},
	"RESPONSE_DURATION": {opResponseDuration, 0}, "RESPONSE_TX_DURATION": {opResponseTxDuration, 0},
	"UPSTREAM_HOST": {opUpstreamHost, 0}, "UPSTREAM_REMOTE_ADDRESS": {opUpstreamHost, 0},
	"UPSTREAM_CLUSTER": {opUpstreamCluster, 0}, "UPSTREAM_LOCAL_ADDRESS": {opUpstreamLocalAddress, 0},
	"UPSTREAM_TRANSPORT_FAILURE_REASON":             {opUpstreamTransportFailureReason, 0},
	"UPSTREAM_REQUEST_ATTEMPT_COUNT":                {opUpstreamRequestAttemptCount, 0},
	"DOWNSTREAM_REMOTE_ADDRESS":                     {opDownstreamRemoteAddress, 0},
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":        {opDownstreamRemoteAddressWithoutPort, 0},
	"DOWNSTREAM_REMOTE_PORT":                        {opDownstreamRemotePort, 0},
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":              {opDownstreamDirectRemoteAddress, 0},
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": {opDownstreamDirectRemoteAddressWithoutPort, 0},
	"DOWNSTREAM_LOCAL_ADDRESS":                      {opDownstreamLocalAddress, 0},
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         {opDownstreamLocalAddressWithoutPort, 0},
	"DOWNSTREAM_LOCAL_PORT":                         {opDownstreamLocalPort, 0},
	"REQUESTED_SERVER_NAME":                         {opRequestedServerName, 0},
	"DOWNSTREAM_PEER_URI_SAN":                       {opPeerURISAN, 0},
	"DOWNSTREAM_PEER_SUBJECT":                       {opPeerSubject, 0},
	"DOWNSTREAM_PEER_FINGERPRINT_256":               {opPeerFingerprint256, 0},
	"DOWNSTREAM_PEER_SERIAL":                        {opPeerSerial, 0},
	"DOWNSTREAM_TLS_VERSION":                        {opTLSVersion, 0},
	"DOWNSTREAM_TLS_CIPHER":                         {opTLSCipher, 0},
	"DOWNSTREAM_TLS_SESSION_ID":                     {opTLSSessionID, 0},
	"ROUTE_NAME":                                    {opRouteName, 0},
	"CONNECTION_TERMINATION_DETAILS":                {opTerminationDetails, 0},
	"CONNECTION_ID":                                 {opConnectionID, 0},
	"HOSTNAME":                                      {opHostname, 0},
}

// piece is a literal or a command operator of a format.
type piece struct {
	kind      opKind
	lit       string // the literal; HOSTNAME's value
	name, alt string // REQ/RESP/TRAILER: the header and its fallback
	max       int    // :N, the most bytes of the value (0: all)
	tf        timeFormat
}

// parseText compiles a format string: literal text and %OPERATOR%,
// %OPERATOR(ARGS)% and %OPERATOR(ARGS):N% commands. A '%' that does
// not begin a known command is an error, as in Envoy.
func parseText(s string) ([]piece, error) {
	var out []piece
	for i := 0; i < len(s); {
		j := strings.IndexByte(s[i:], '%')
		if j < 0 {
			out = append(out, piece{lit: s[i:]})
			break
		}
		if j > 0 {
			out = append(out, piece{lit: s[i : i+j]})
		}
		i += j
		p, n, err := parseCommand(s[i:])
		if err != nil {
			return nil, fmt.Errorf("format %q at position %d: %w", s, i, err)
		}
		out = append(out, p)
		i += n
	}
	return out, nil
}

// parseCommand reads one command at the start of s (which begins with
// '%') and returns it with the bytes it took.
func parseCommand(s string) (piece, int, error) {
	i := 1
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
		i++
	}
	name := s[1:i]
	if name == "" {
		return piece{}, 0, fmt.Errorf("'%%' does not begin a command (%%OPERATOR%%)")
	}
	op, ok := operators[name]
	if !ok {
		return piece{}, 0, fmt.Errorf("unknown command operator %%%s%%", name)
	}
	p := piece{kind: op.kind}
	var args string
	hasArgs := i < len(s) && s[i] == '('
	if hasArgs {
		end := strings.IndexByte(s[i:], ')')
		if end < 0 {
			return piece{}, 0, fmt.Errorf("%%%s: unclosed '('", name)
		}
		args = s[i+1 : i+end]
		i += end + 1
	}
	switch {
	case op.args == 0 && hasArgs:
		return piece{}, 0, fmt.Errorf("%%%s%% takes no arguments", name)
	case op.args == 1 && !hasArgs:
		return piece{}, 0, fmt.Errorf("%%%s%% needs an argument: %%%s(NAME)%%", name, name)
	}
	if i < len(s) && s[i] == ':' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(s[i+1 : j])
		if err != nil || n <= 0 {
			return piece{}, 0, fmt.Errorf("%%%s: bad length after ':'", name)
		}
		p.max, i = n, j
	}
	if i >= len(s) || s[i] != '%' {
		return piece{}, 0, fmt.Errorf("%%%s: missing closing '%%'", name)
	}
	switch op.kind {
	case opReq, opResp, opTrailer:
		main, alt, _ := strings.Cut(args, "?")
		if main == "" || strings.Contains(alt, "?") {
			return piece{}, 0, fmt.Errorf("%%%s(%s)%%: want a header name, optionally ?ALTERNATIVE", name, args)
		}
		p.name, p.alt = strings.ToLower(main), strings.ToLower(alt)
	case opStartTime:
		p.tf = defaultTimeFormat
		if args != "" {
			tf, err := parseTimeFormat(args)
			if err != nil {
				return piece{}, 0, err
			}
			p.tf = tf
		}
	case opHostname:
		h, err := os.Hostname()
		if err != nil {
			h = "-"
		}
		p.lit = h
	}
	return p, i + 1, nil
}

// numeric reports whether a JSON log writes the operator as a number.
func (p *piece) numeric() bool {
	switch p.kind {
	case opResponseCode, opBytesReceived, opBytesSent, opDuration, opRequestDuration, opResponseDuration,
		opResponseTxDuration, opUpstreamRequestAttemptCount, opDownstreamRemotePort, opDownstreamLocalPort, opConnectionID:
		return true
	}
	return false
}

// appendValue appends the piece's value for e; ok is false when it has
// none (a missing header, a response that never came), and then
// nothing was appended.
func (p *piece) appendValue(b []byte, e *Entry) ([]byte, bool) {
	n := len(b)
	b, ok := p.value(b, e)
	if ok && p.max > 0 && len(b)-n > p.max {
		b = b[:n+p.max]
	}
	return b, ok
}

func (p *piece) value(b []byte, e *Entry) ([]byte, bool) {
	switch p.kind {
	case opLiteral, opHostname:
		return append(b, p.lit...), true
	case opStartTime:
		return p.tf.append(b, e.Start), true
	case opReq:
		return header(b, e.Request, p.name, p.alt)
	case opResp:
		return header(b, e.Response, p.name, p.alt)
	case opTrailer:
		return header(b, e.Trailers, p.name, p.alt)
	case opProtocol:
		return str(b, e.Protocol)
	case opResponseCode:
		return strconv.AppendInt(b, int64(e.ResponseCode), 10), true
	case opResponseCodeDetails:
		return str(b, e.ResponseCodeDetails)
	case opResponseFlags:
		return e.Flags.AppendShort(b), e.Flags != 0
	case opResponseFlagsLong:
		return e.Flags.AppendLong(b), e.Flags != 0
	case opBytesReceived:
		return strconv.AppendUint(b, e.BytesReceived, 10), true
	case opBytesSent:
		return strconv.AppendUint(b, e.BytesSent, 10), true
	case opDuration:
		return millis(b, e.Duration)
	case opRequestDuration:
		return millis(b, e.RequestDuration)
	case opResponseDuration:
		return millis(b, e.ResponseDuration)
	case opResponseTxDuration:
		return millis(b, e.ResponseTxDuration)
	case opUpstreamHost:
		return str(b, e.UpstreamHost)
	case opUpstreamCluster:
		return str(b, e.UpstreamCluster)
	case opUpstreamLocalAddress:
		return addr(b, e.UpstreamLocal, withPort)
	case opUpstreamTransportFailureReason:
		return str(b, e.UpstreamTransportFailure)
	case opUpstreamRequestAttemptCount:
		return strconv.AppendInt(b, int64(e.Attempts), 10), true
	case opRouteName:
		return str(b, e.RouteName)
	case opTerminationDetails:
		return str(b, e.TerminationDetails)
	case opConnectionID:
		return strconv.AppendUint(b, e.ConnectionID, 10), true
	case opRequestedServerName:
		if e.ServerName != "" {
			return append(b, e.ServerName...), true
		}
		if cs, ok := tlsState(e); ok {
			return str(b, cs.ServerName)
		}
		return b, false
	}
	if p.kind >= opPeerURISAN && p.kind <= opTLSSessionID {
		return p.tlsValue(b, e)
	}
	if e.Conn == nil {
		return b, false
	}
	switch p.kind {
	case opDownstreamRemoteAddress, opDownstreamDirectRemoteAddress:
		return addr(b, e.Conn.RemoteAddr(), withPort)
	case opDownstreamRemoteAddressWithoutPort, opDownstreamDirectRemoteAddressWithoutPort:
		return addr(b, e.Conn.RemoteAddr(), hostOnly)
	case opDownstreamRemotePort:
		return addr(b, e.Conn.RemoteAddr(), portOnly)
	case opDownstreamLocalAddress:
		return addr(b, e.Conn.LocalAddr(), withPort)
	case opDownstreamLocalAddressWithoutPort:
		return addr(b, e.Conn.LocalAddr(), hostOnly)
	case opDownstreamLocalPort:
		return addr(b, e.Conn.LocalAddr(), portOnly)
	}
	return b, false
}

func tlsState(e *Entry) (tls.ConnectionState, bool) {
	if e.Conn == nil {
		return tls.ConnectionState{}, false
	}
	return e.Conn.TLSState()
}

// tlsValue is an operator on the downstream TLS session: "-" on a
// plaintext connection, and for peer fields when the peer sent no
// certificate.
func (p *piece) tlsValue(b []byte, e *Entry) ([]byte, bool) {
	cs, ok := tlsState(e)
	if !ok {
		return b, false
	}
	switch p.kind {
	case opTLSVersion:
		switch cs.Version {
		case tls.VersionTLS10:
			return append(b, "TLSv1"...), true
		case tls.VersionTLS11:
			return append(b, "TLSv1.1"...), true
		case tls.VersionTLS12:
			return append(b, "TLSv1.2"...), true
		case tls.VersionTLS13:
			return append(b, "TLSv1.3"...), true
		}
		return str(b, tls.VersionName(cs.Version))
	case opTLSCipher:
		return str(b, tls.CipherSuiteName(cs.CipherSuite))
	case opTLSSessionID:
		return b, false // Go's TLS does not expose session ids
	}
	if len(cs.PeerCertificates) == 0 {
		return b, false
	}
	leaf := cs.PeerCertificates[0]
	switch p.kind {
	case opPeerURISAN:
		for i, u := range leaf.URIs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, u.String()...)
		}
		return b, len(leaf.URIs) > 0
	case opPeerSubject:
		return str(b, leaf.Subject.String())
	case opPeerFingerprint256:
		sum := sha256.Sum256(leaf.Raw)
		return hex.AppendEncode(b, sum[:]), true
	case opPeerSerial:
		// Lowercase hex of whole bytes, as Envoy prints it.
		return hex.AppendEncode(b, leaf.SerialNumber.Bytes()), leaf.SerialNumber.Sign() != 0
	}
	return b, false
}

func header(b []byte, h Headers, name, alt string) ([]byte, bool) {
	if h == nil {
		return b, false
	}
	if v, ok := h.Get(name); ok {
		return append(b, v...), true
	}
	if alt != "" {
		if v, ok := h.Get(alt); ok {
			return append(b, v...), true
		}
	}
	return b, false
}

func str(b []byte, s string) ([]byte, bool) {
	if s == "" {
		return b, false
	}
	return append(b, s...), true
}

func millis(b []byte, d time.Duration) ([]byte, bool) {
	if d < 0 {
		return b, false
	}
	return strconv.AppendInt(b, d.Milliseconds(), 10), true
}

type addrPart uint8

const (
	withPort addrPart = iota
	hostOnly
	portOnly
)

func addr(b []byte, a net.Addr, part addrPart) ([]byte, bool) {
	if a == nil {
		return b, false
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		switch part {
		case portOnly:
			return strconv.AppendInt(b, int64(ta.Port), 10), true
		case hostOnly:
			return ta.AddrPort().Addr().Unmap().AppendTo(b), true
		}
		ap := ta.AddrPort()
		if ap.Addr().Is4In6() {
			return strconv.AppendInt(append(ap.Addr().Unmap().AppendTo(b), ':'), int64(ap.Port()), 10), true
		}
		return ap.AppendTo(b), true
	}
	s := a.String()
	if part == withPort {
		return str(b, s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return str(b, s)
	}
	if part == portOnly {
		return str(b, port)
	}
	return str(b, host)
}
