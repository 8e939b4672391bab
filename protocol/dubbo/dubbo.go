// Package dubbo is the Dubbo 2 codec ("dubbo" protocol over TCP, hessian2
// bodies) on the framed-RPC seam of protocol/rpc. Every frame starts with
// a 16-byte header:
//
//	 0        1        2        3        4 ...         11 12 ...      15
//	+--------+--------+--------+--------+---------------+--------------+
//	|  0xda  |  0xbb  |  flag  | status |  request id   | body length  |
//	+--------+--------+--------+--------+---------------+--------------+
//	                      |        |       (int64 BE)      (int32 BE)
//	                      |        +-- replies only: 20 OK, 31 server timeout,
//	                      |            40 bad request, 60 service not found,
//	                      |            70 service error, 80 server error,
//	                      |            100 thread pool exhausted, ...
//	                      +-- 0x80 request, 0x40 two-way, 0x20 event,
//	                          low 5 bits: serialization (2 = hessian2)
//
// A request's body is hessian2 values in a row: dubbo version, service
// path (the interface), service version, method name, parameter types
// descriptor, the arguments, then the attachments map. The codec reads
// the first five itself (they are plain strings) and the attachments with
// dubbo-go-hessian2 only when routing or filters need them; the body is
// forwarded untouched. An event with a null body is a heartbeat.
package dubbo

import (
	"encoding/binary"
	"errors"
	"fmt"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/rpc"
)

// Name is the codec's registered name.
const Name = "dubbo"

// Header layout.
const (
	HeaderLen = 16
	magicHi   = 0xda
	magicLo   = 0xbb

	flagRequest = 0x80
	flagTwoWay  = 0x40
	flagEvent   = 0x20
	serialMask  = 0x1f
	// Hessian2 is the serialization id of hessian2.
	Hessian2 = 2
)

// Dubbo status codes.
const (
	StatusOK                  = 20
	StatusClientTimeout       = 30
	StatusServerTimeout       = 31
	StatusBadRequest          = 40
	StatusBadResponse         = 50
	StatusServiceNotFound     = 60
	StatusServiceError        = 70
	StatusServerError         = 80
	StatusClientError         = 90
	StatusThreadPoolExhausted = 100
)

// Codec is the Dubbo codec. Attachments makes Request decode the
// attachments map (group, version, user attachments) into the headers;
// without it only the call's head is read, which allocates nothing.
// Params adds the arguments that are strings, numbers or booleans as
// ":param-N" headers (params_match routing); it implies Attachments.
type Codec struct {
	Attachments bool
	Params      bool
}

var (
	_ rpc.Codec           = Codec{}
	_ rpc.ExceptionReader = Codec{}
)

func (Codec) Name() string   { return Name }
func (Codec) HeaderLen() int { return HeaderLen }

// Match reports whether a connection starts with Dubbo's magic.
func (Codec) Match(prefix []byte) (match, needMore bool) {
	switch {
	case len(prefix) == 0:
		return false, true
	case prefix[0] != magicHi:
		return false, false
	case len(prefix) == 1:
		return false, true
	}
	return prefix[1] == magicLo, false
}

// ErrMagic is Parse's answer to bytes that are not a Dubbo frame.
var ErrMagic = errors.New("dubbo: bad magic")

// Parse reads a frame header.
func (Codec) Parse(h []byte) (rpc.Frame, error) {
	if len(h) < HeaderLen || h[0] != magicHi || h[1] != magicLo {
		return rpc.Frame{}, ErrMagic
	}
	body := binary.BigEndian.Uint32(h[12:16])
	if body > 1<<30 {
		return rpc.Frame{}, fmt.Errorf("dubbo: body length %d", body)
	}
	f := rpc.Frame{Len: HeaderLen + int(body), ID: binary.BigEndian.Uint64(h[4:12])}
	flag := h[2]
	switch {
	case flag&flagRequest != 0 && flag&flagEvent != 0:
		// A heartbeat's body is hessian2 null ("N"); other events (the
		// provider's "R" readonly notice) are dropped.
		f.Kind = rpc.Other
		if body <= 1 {
			f.Kind = rpc.Ping
		}
	case flag&flagRequest != 0 && flag&flagTwoWay != 0:
		f.Kind = rpc.Call
	case flag&flagRequest != 0:
		f.Kind = rpc.OneWay
	case flag&flagEvent != 0:
		f.Kind = rpc.Pong
	default:
		f.Kind = rpc.Reply
		f.Status = statusOf(h[3])
	}
	return f, nil
}

// statusOf maps a reply's Dubbo status to the engine's.
func statusOf(s byte) rpc.Status {
	switch s {
	case StatusOK:
		return rpc.StatusOK
	case StatusClientTimeout, StatusServerTimeout:
		return rpc.StatusTimeout
	case StatusBadRequest:
		return rpc.StatusBadRequest
	case StatusServiceNotFound:
		return rpc.StatusNoRoute
	case StatusThreadPoolExhausted:
		return rpc.StatusOverload
	}
	return rpc.StatusError
}

// statusCode is a local reply's Dubbo status.
func statusCode(s rpc.Status) byte {
	switch s {
	case rpc.StatusOK:
		return StatusOK
	case rpc.StatusBadRequest:
		return StatusBadRequest
	case rpc.StatusNoRoute:
		return StatusServiceNotFound
	case rpc.StatusUnavailable:
		return StatusServiceError
	case rpc.StatusTimeout:
		return StatusServerTimeout
	case rpc.StatusOverload:
		return StatusThreadPoolExhausted
	}
	return StatusServerError
}

// SetID rewrites a header's request id.
func (Codec) SetID(h []byte, id uint64) { binary.BigEndian.PutUint64(h[4:12], id) }

// serial is a request's serialization id, hessian2 when it names none.
func serial(req []byte) byte {
	if len(req) > 2 {
		if s := req[2] & serialMask; s != 0 {
			return s
		}
	}
	return Hessian2
}

func appendHeader(dst []byte, flag, status byte, id uint64, body int) []byte {
	dst = append(dst, magicHi, magicLo, flag, status)
	dst = binary.BigEndian.AppendUint64(dst, id)
	return binary.BigEndian.AppendUint32(dst, uint32(body))
}

// AppendError appends an error reply: the status, and the message as a
// hessian2 string, as Dubbo providers answer a failed call.
func (Codec) AppendError(dst, req []byte, st rpc.Status, msg string) []byte {
	var id uint64
	if len(req) >= HeaderLen {
		id = binary.BigEndian.Uint64(req[4:12])
	}
	e := hessian.NewEncoder()
	if err := e.Encode(msg); err != nil {
		e = hessian.NewEncoder()
		e.Encode("error")
	}
	body := e.Buffer()
	dst = appendHeader(dst, serial(req), statusCode(st), id, len(body))
	return append(dst, body...)
}

var slash = []byte{'/'}

// hessianNull is hessian2's null: a heartbeat's body.
const hessianNull = 'N'

// AppendPing appends a heartbeat request.
func (Codec) AppendPing(dst []byte, id uint64) []byte {
	dst = appendHeader(dst, flagRequest|flagTwoWay|flagEvent|Hessian2, 0, id, 1)
	return append(dst, hessianNull)
}

// AppendPong appends the answer to the heartbeat whose header is req.
func (Codec) AppendPong(dst, req []byte) []byte {
	dst = appendHeader(dst, flagEvent|serial(req), StatusOK, binary.BigEndian.Uint64(req[4:12]), 1)
	return append(dst, hessianNull)
}

// Response types, the first value of a hessian2 reply body (a compact
// int: 0x90 + n): the two that carry an exception.
const (
	respException            = 0x90 // RESPONSE_WITH_EXCEPTION
	respExceptionAttachments = 0x93 // RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS
)

// Exception reports whether a reply whose status is OK carries the
// provider's exception (rpc.ExceptionReader).
func (Codec) Exception(reply []byte) bool {
	if len(reply) <= HeaderLen || reply[2]&flagEvent != 0 || serial(reply) != Hessian2 {
		return false
	}
	t := reply[HeaderLen]
	return t == respException || t == respExceptionAttachments
}

// Request reads the call's routing keys into h (README.md lists them).
func (c Codec) Request(frame []byte, h *protocol.Headers) error {
	if serial(frame) != Hessian2 {
		return fmt.Errorf("dubbo: serialization %d is not supported (hessian2 only)", serial(frame))
	}
	var head Head
	rest, err := ReadHead(frame[HeaderLen:], &head)
	if err != nil {
		return err
	}
	h.Set(protocol.Method, "POST")
	h.SetBytes(protocol.Authority, head.Service)
	h.SetJoin(protocol.Path, slash, head.Service, slash, head.Method)
	h.SetBytes(rpc.MethodHeader, head.Method)
	if len(head.Version) > 0 {
		h.SetBytes("version", head.Version)
	}
	if c.Attachments || c.Params {
		return readAttachments(rest, &head, h, c.Params)
	}
	return nil
}
