package http2

import (
	"hash/maphash"
	"strconv"
	"sync/atomic"

	"github.com/straitproxy/strait/protocol"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// Header block kinds.
const (
	blkRequest  = iota // a new request's headers
	blkTrailers        // request or response trailers
	blkResponse        // response headers (client side)
	blkDiscard         // decoded only to keep HPACK state in step
)

// Pseudo-header bits, to catch duplicates and missing ones.
const (
	psMethod = 1 << iota
	psScheme
	psAuthority
	psPath
	psStatus
)

// block is the header block being decoded; the HPACK decoder's emit
// function validates each field into it (RFC 9113 §8.2, §8.3).
type block struct {
	kind      int
	id        uint32
	endStream bool
	h         *protocol.Headers
	maxBytes  int
	maxFields int

	size, fields int
	raw, frames  int
	sawRegular   bool
	pseudo       uint8
	cookies      int
	// bad is why the block is malformed (a stream error); tooLarge means
	// it outgrew the header list limits (431).
	bad      string
	tooLarge bool
	// closed: a HEADERS frame on a stream that closed normally.
	closed bool
	clen   int64
}

func (b *block) reset(kind int, id uint32, end bool, h *protocol.Headers, maxBytes, maxFields int) {
	*b = block{kind: kind, id: id, endStream: end, h: h, maxBytes: maxBytes, maxFields: maxFields, clen: -1}
}

// emit takes one decoded field. It returns false when the block went
// over its limits (the decoder then stops emitting).
func (b *block) emit(f hpack.HeaderField) bool {
	b.size += len(f.Name) + len(f.Value) + 32
	b.fields++
	if b.size > b.maxBytes || (b.maxFields > 0 && b.fields > b.maxFields) {
		b.tooLarge = true
		return false
	}
	if b.bad != "" || b.kind == blkDiscard {
		return true
	}
	if len(f.Name) > 0 && f.Name[0] == ':' {
		b.pseudoField(f)
		return true
	}
	b.sawRegular = true
	if why := checkField(f.Name, f.Value); why != "" {
		b.bad = why
		return true
	}
	switch f.Name {
	case "content-length":
		n, err := strconv.ParseInt(f.Value, 10, 64)
		if err != nil || n < 0 || (b.clen >= 0 && b.clen != n) {
			b.bad = "invalid content-length"
			return true
		}
		b.clen = n
	case "cookie":
		b.cookies++
	}
	b.h.AddString(f.Name, f.Value)
	return true
}

func (b *block) pseudoField(f hpack.HeaderField) {
	if b.sawRegular || b.kind == blkTrailers {
		b.bad = "pseudo-header field after regular fields or in trailers"
		return
	}
	var bit uint8
	switch f.Name {
	case protocol.Method:
		bit = psMethod
	case protocol.Scheme:
		bit = psScheme
	case protocol.Authority:
		bit = psAuthority
	case protocol.Path:
		bit = psPath
	case protocol.Status:
		bit = psStatus
	}
	request := b.kind == blkRequest
	if bit == 0 || (bit == psStatus) == request {
		b.bad = "unknown or misplaced pseudo-header field " + f.Name
		return
	}
	if b.pseudo&bit != 0 {
		b.bad = "duplicate pseudo-header field " + f.Name
		return
	}
	b.pseudo |= bit
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		b.bad = "invalid value for " + f.Name
		return
	}
	b.h.AddString(f.Name, f.Value)
}

// checkField validates a regular field as RFC 9113 §8.2 requires of
// what an HTTP/2 peer sends: lowercase token names, no connection-specific
// fields, and te only as "trailers".
func checkField(name, value string) string {
	if name == "" || !httpguts.ValidHeaderFieldName(name) {
		return "invalid header field name"
	}
	for i := 0; i < len(name); i++ {
		if 'A' <= name[i] && name[i] <= 'Z' {
			return "uppercase header field name"
		}
	}
	if !httpguts.ValidHeaderFieldValue(value) {
		return "invalid header field value"
	}
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return "connection-specific header field " + name
	case "te":
		if value != "trailers" {
			return "te header field other than trailers"
		}
	}
	return ""
}

// finishRequest checks the pseudo-header fields a request must carry
// (RFC 9113 §8.3.1) and normalises it for the proxy: one Cookie field,
// and :authority standing for Host.
func (b *block) finishRequest() {
	if b.bad != "" {
		return
	}
	h := b.h
	// The checks the HTTP/1.1 parser makes of a request line and Host
	// (protocol/validate.go): an HTTP/2 request must not carry what would
	// change meaning once written as HTTP/1.1.
	method, _ := h.Get(protocol.Method)
	if b.pseudo&psMethod != 0 && !protocol.IsToken(method) {
		b.bad = "invalid :method"
		return
	}
	auth, hasAuth := h.Get(protocol.Authority)
	if string(method) == "CONNECT" {
		switch {
		case b.pseudo != psMethod|psAuthority:
			b.bad = "CONNECT needs :authority and no :scheme or :path"
		case !protocol.ValidAuthorityForm(auth):
			b.bad = "invalid :authority for CONNECT"
		}
		return
	}
	if b.pseudo&(psMethod|psScheme|psPath) != psMethod|psScheme|psPath {
		b.bad = "missing :method, :scheme or :path"
		return
	}
	path, _ := h.Get(protocol.Path)
	if why := protocol.CheckPath(method, path); why != "" {
		b.bad = why
		return
	}
	if sc, _ := h.Get(protocol.Scheme); !protocol.ValidScheme(sc) {
		b.bad = "invalid :scheme"
		return
	}
	if hasAuth && !protocol.ValidHost(auth) {
		b.bad = "invalid :authority"
		return
	}
	if host, ok := h.Get("host"); ok && !protocol.ValidHost(host) {
		b.bad = "invalid host"
		return
	}
	if b.pseudo&psAuthority == 0 {
		if host, ok := h.Get("host"); ok {
			h.SetBytes(protocol.Authority, host)
		}
	}
	h.Del("host")
	if b.cookies > 1 {
		joinCookies(h)
	}
}

// joinCookies folds the Cookie fields into one, as a request forwarded
// to HTTP/1.1 must carry them (RFC 9113 §8.2.3).
func joinCookies(h *protocol.Headers) {
	var joined []byte
	h.Visit(func(name, value []byte) bool {
		if string(name) == "cookie" {
			if len(joined) > 0 {
				joined = append(joined, "; "...)
			}
			joined = append(joined, value...)
		}
		return true
	})
	h.SetBytes("cookie", joined)
}

// skipOutbound reports the fields not sent on HTTP/2: connection-specific
// ones, which an HTTP/1.1 peer may have sent us.
func skipOutbound(name, value []byte) bool {
	switch string(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	case "te":
		return !protocol.EqualFold(protocol.TrimOWS(value), "trailers")
	}
	return false
}

// common field names, interned so that encoding them does not allocate.
var common = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{
		":status", ":method", ":path", ":scheme", ":authority",
		"accept", "accept-encoding", "accept-language", "authorization", "cache-control",
		"content-encoding", "content-length", "content-type", "cookie", "date", "etag",
		"expires", "grpc-encoding", "grpc-accept-encoding", "grpc-message", "grpc-status",
		"grpc-timeout", "host", "last-modified", "location", "server", "set-cookie", "te",
		"user-agent", "vary", "via", "x-envoy-upstream-service-time", "x-forwarded-for",
		"x-forwarded-proto", "x-request-id",
	} {
		m[n] = n
	}
	return m
}()

func internName(b []byte) string {
	if s, ok := common[string(b)]; ok {
		return s
	}
	return intern(b)
}

// recent is a process-wide cache of short strings recently handed to the
// HPACK encoder (response header values such as "200", "128",
// "text/plain", the date of this second), so that encoding a response
// allocates only on a miss. A slot holds one string; a colliding string
// replaces it.
var (
	recent     [1024]atomic.Pointer[string]
	recentSeed = maphash.MakeSeed()
)

// maxInterned bounds the strings the cache takes.
const maxInterned = 64

// secret names fields whose values are credentials: they stay out of the
// cache of recent values.
func secret(name string) bool {
	switch name {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return true
	}
	return false
}

// intern returns b as a string, from the cache when it holds it.
func intern(b []byte) string {
	if len(b) == 0 || len(b) > maxInterned {
		return string(b)
	}
	slot := &recent[maphash.Bytes(recentSeed, b)%uint64(len(recent))]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	slot.Store(&s)
	return s
}
