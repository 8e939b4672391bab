// Package rpc is the seam for framed, request-id-multiplexed RPC
// protocols (Dubbo here; SOFA Bolt, Thrift's framed transport or Tars
// would plug in the same way). A protocol implements Codec: how long a
// frame is, what kind it is, its request id, how to rewrite that id, what
// routing reads from a request, and how to encode an error reply and a
// heartbeat. The engine in this package does the rest and presents the
// protocol to the proxy as an ordinary protocol.Codec: a server codec
// whose calls are streams (so stream filters, routing, retries, timeouts,
// mirroring and stats apply unchanged) and a multiplexed upstream
// connection that remaps request ids. README.md walks through it.
//
// rpc imports protocol and internal packages only.
package rpc

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/straitproxy/strait/protocol"
)

// Kind is what a frame carries.
type Kind uint8

const (
	// Call is a request that expects an answer.
	Call Kind = iota
	// OneWay is a request that gets no answer.
	OneWay
	// Reply answers a Call.
	Reply
	// Ping is a heartbeat request; Pong answers it.
	Ping
	Pong
	// Other is an event the engine does not act on (it is dropped).
	Other
)

// Frame is what a frame's fixed header says.
type Frame struct {
	// Len is the whole frame's length, header included.
	Len  int
	ID   uint64
	Kind Kind
	// Status is a Reply's status (StatusOK for a normal answer, including
	// one that carries an application exception).
	Status Status
}

// Status is a local reply's reason, in the engine's words; each codec maps
// it to its protocol's status code.
type Status uint8

const (
	StatusOK Status = iota
	// StatusBadRequest: the request was malformed or too large.
	StatusBadRequest
	// StatusNoRoute: no route or no cluster for the call.
	StatusNoRoute
	// StatusUnavailable: no healthy upstream, the upstream failed or reset.
	StatusUnavailable
	// StatusTimeout: the upstream did not answer in time.
	StatusTimeout
	// StatusOverload: a circuit breaker or rate limit refused the call.
	StatusOverload
	// StatusError: any other failure.
	StatusError
)

// Codec is what a framed RPC protocol implements.
type Codec interface {
	// Name is the protocol's registered name ("dubbo").
	Name() string
	// Match reports whether a connection's first bytes are this
	// protocol's (detection on a shared port); needMore asks for more.
	Match(prefix []byte) (match, needMore bool)
	// HeaderLen is how many bytes Parse needs.
	HeaderLen() int
	// Parse reads a frame's fixed header. An error means the bytes are not
	// this protocol (bad magic): the connection cannot be resynchronized.
	Parse(head []byte) (Frame, error)
	// SetID rewrites the request id in a frame header, in place.
	SetID(head []byte, id uint64)
	// Request reads what routing needs from a whole request frame into h
	// (pseudo-headers :authority, :path and :method, then the call's
	// attachments as fields; README.md lists them). An error answers the
	// call with StatusBadRequest.
	Request(frame []byte, h *protocol.Headers) error
	// AppendError appends a whole error reply to the request whose header
	// is req.
	AppendError(dst, req []byte, st Status, msg string) []byte
	// AppendPing appends a heartbeat request with the id; AppendPong the
	// answer to the heartbeat whose header is req.
	AppendPing(dst []byte, id uint64) []byte
	AppendPong(dst, req []byte) []byte
}

// Pseudo-headers an RPC codec sets on a call beside :authority (the
// service), :path ("/service/method") and :method ("POST").
const (
	// MethodHeader is the called method's name.
	MethodHeader = protocol.RPCMethod
	// TimeoutHeader is the caller's timeout in milliseconds, when it sent
	// one: it shortens the route's timeout, as grpc-timeout does.
	TimeoutHeader = protocol.RPCTimeout
	// ParamPrefix names the headers that carry arguments for routing
	// (":param-0", ...), set only with ReadOptions.Params.
	ParamPrefix = ":param-"
	// OneWayHeader ("1") marks a one-way call.
	OneWayHeader = protocol.RPCOneWay
	// ExceptionHeader ("1") marks, on a relayed reply's headers, an
	// answer that carries an application exception (codecs that
	// implement ExceptionReader).
	ExceptionHeader = protocol.RPCException
)

// ExceptionReader is implemented by a codec that can tell, from a whole
// reply frame whose status is OK, that it carries the provider's
// application exception rather than a value (stats count these apart).
type ExceptionReader interface {
	Exception(reply []byte) bool
}

// ReadOptions say what a codec reads of a call beyond its head.
type ReadOptions struct {
	// Attachments: the call's attachments (key-value strings) as header
	// fields.
	Attachments bool
	// Params: the arguments that are strings, numbers or booleans as
	// ParamPrefix headers.
	Params bool
}

var (
	regMu    sync.Mutex
	registry = map[string]func(ReadOptions) Codec{}
)

// Register makes a codec available by name to network filters (which may
// not import a codec's package); newCodec makes it with read options.
func Register(name string, newCodec func(ReadOptions) Codec) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("rpc: codec " + name + " registered twice")
	}
	registry[name] = newCodec
}

// Lookup returns the codec maker registered under name.
func Lookup(name string) (func(ReadOptions) Codec, error) {
	regMu.Lock()
	defer regMu.Unlock()
	if f, ok := registry[name]; ok {
		return f, nil
	}
	return nil, fmt.Errorf("RPC protocol %q is not compiled in", name)
}

// Options bound what the engine accepts.
type Options struct {
	// MaxBody bounds the body a frame may declare (its header aside); a
	// larger one is refused before any of it is buffered. 0: DefaultMaxBody.
	MaxBody int
	// MaxActive bounds a downstream connection's calls in flight; past
	// it, the connection stops reading. 0: DefaultMaxActive.
	MaxActive int
	// MaxStreams bounds an upstream connection's calls in flight.
	// 0: DefaultMaxStreams.
	MaxStreams int
	// Heartbeat is how often an idle upstream connection sends a
	// heartbeat; one unanswered by the next closes it. 0: none.
	Heartbeat time.Duration
	// Events hears what a downstream connection handles before any
	// stream exists (nil: nothing).
	Events Events
}

// Events counts frames the engine handles itself. Its methods are called
// from connections' readers and must not block.
type Events interface {
	// Heartbeat: a client's heartbeat, answered.
	Heartbeat()
	// Decoded: a call's frame was read, its routing keys decoded (ok), or
	// it was refused as malformed or oversized (answered with
	// StatusBadRequest).
	Decoded(ok bool)
}

// Defaults.
const (
	DefaultMaxBody    = 8 << 20
	DefaultMaxActive  = 1024
	DefaultMaxStreams = 4096
	DefaultHeartbeat  = 30 * time.Second
)

func (o Options) maxFrame(hl int) int {
	if o.MaxBody > 0 {
		return o.MaxBody + hl
	}
	return DefaultMaxBody + hl
}

// NewCodec makes the protocol.Codec the proxy uses for c: Match for
// detection, a server codec, and multiplexed upstream connections with
// opts applied to both sides (a heartbeat default when opts has none).
func NewCodec(c Codec, opts Options) *protocol.Codec {
	if opts.Heartbeat == 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	return &protocol.Codec{
		Name:  c.Name(),
		Match: c.Match,
		NewServer: func(conn protocol.Conn, so protocol.ServerOptions, cb protocol.ServerCallbacks) protocol.ServerCodec {
			return newServer(c, opts, conn, cb)
		},
		NewMux: func(nc net.Conn, mo protocol.MuxOptions) protocol.MuxConn {
			return newMux(c, opts, nc, mo)
		},
	}
}

// StatusFor maps the proxy's local reply (an HTTP status code, and
// whether it was an overload) to a Status.
func StatusFor(code int, overloaded bool) Status {
	switch {
	case code >= 200 && code < 300:
		return StatusOK
	case overloaded || code == 429:
		return StatusOverload
	case code == 400 || code == 413 || code == 431:
		return StatusBadRequest
	case code == 404:
		return StatusNoRoute
	case code == 504 || code == 408:
		return StatusTimeout
	case code == 502 || code == 503:
		return StatusUnavailable
	}
	return StatusError
}

// Errors the upstream side reports.
var (
	errClosed  = errors.New("rpc: connection closed")
	errNoReply = errors.New("rpc: a one-way call has no reply")
)
