package protocol

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"
)

// Conn is what a server codec needs of a downstream connection
// (network.Conn satisfies it).
type Conn interface {
	Write(p []byte) (int, error)
	Writev(bufs ...[]byte) (int64, error)
	PauseRead()
	ResumeRead()
	Close() error
	CloseWrite() error
	// LingerClose closes the write side now and the connection once the
	// peer closes or d passes; the handler drops what is read meanwhile.
	LingerClose(d time.Duration)
	RemoteAddr() net.Addr
	LocalAddr() net.Addr
}

// ServerStream is one request on a downstream connection, as the worker
// that serves it sees it. Its methods are called from that one worker.
type ServerStream interface {
	// Request returns the request headers, pseudo-headers first. The worker
	// may change them (they are the stream's own copy).
	Request() *Headers
	// HeadersOnly reports whether the request has no body at all.
	HeadersOnly() bool
	// ReadData returns the next piece of the request body, valid until the
	// next call; io.EOF after the last piece (the last piece may come with
	// it).
	ReadData() ([]byte, error)
	// RequestTrailers returns the trailers once ReadData returned io.EOF;
	// nil when there were none.
	RequestTrailers() *Headers
	// WriteHeaders sends the response headers (":status" first).
	WriteHeaders(h *Headers, endStream bool) error
	// WriteData sends body bytes; the codec does not retain p.
	WriteData(p []byte, endStream bool) error
	// WriteTrailers sends trailers and ends the stream.
	WriteTrailers(t *Headers) error
	// Finish releases the stream after the response ended or failed;
	// reset=true abandons it (the codec closes or resets as its protocol
	// requires). No method is called after Finish.
	Finish(reset bool)
	// Protocol is "HTTP/1.1", "HTTP/1.0" or "HTTP/2".
	Protocol() string
}

// Upgrader is implemented by streams that can become a raw byte tunnel
// after a 101 (HTTP/1.1 Upgrade, e.g. WebSocket): after Upgrade, ReadData
// returns the raw bytes the client sends and WriteData sends raw bytes.
type Upgrader interface {
	Upgrade()
}

// ReadCanceler is implemented by server streams whose body reads can be
// cut short (timeouts). ReadCancel returns a function, bound to the
// current request, that makes its pending and next ReadData return err; it
// does nothing once that request has ended.
type ReadCanceler interface {
	ReadCancel() func(err error)
}

// Canceler is implemented by server streams whose client can leave while
// the worker waits on the upstream: OnCancel installs f, which the codec
// calls once when the client resets the stream or the connection ends
// before the stream is finished (at once if that happened already).
// f is called with the codec's lock held, from whichever goroutine saw
// the client leave: it must not block or call into the stream. After
// OnCancel(nil) returns, the old f is never called.
type Canceler interface {
	OnCancel(f func())
}

// CancelHook is a stream's Canceler state, for codecs; the codec guards
// it with its own lock.
type CancelHook struct {
	f    func()
	gone bool
}

// Set installs f (OnCancel), running it at once if the client left.
func (c *CancelHook) Set(f func()) {
	c.f = f
	if f != nil && c.gone {
		c.f = nil
		f()
	}
}

// Fire records that the client left and runs the installed function.
func (c *CancelHook) Fire() {
	if c.gone {
		return
	}
	c.gone = true
	if f := c.f; f != nil {
		c.f = nil
		f()
	}
}

// Reset forgets the function and the client's leaving (a new request).
func (c *CancelHook) Reset() { *c = CancelHook{} }

// Clear forgets the function (the stream finished).
func (c *CancelHook) Clear() { c.f = nil }

// ServerCallbacks is what a server codec calls when it decodes.
type ServerCallbacks interface {
	// OnStream is called from the connection's reader for each new
	// request once its headers are decoded. It does not block: the
	// request goes to the worker pool, which queues it when full (the
	// codec bounds how many of a connection's requests may wait).
	OnStream(s ServerStream)
}

// HeadersTimeoutCounter is implemented by ServerCallbacks that count the
// requests whose head did not arrive within RequestHeadersTimeout.
type HeadersTimeoutCounter interface {
	OnHeadersTimeout()
}

// ServerCodec decodes one downstream connection.
type ServerCodec interface {
	// Decode consumes bytes from the connection and reports how many; it
	// may send a protocol error reply and close the connection itself.
	Decode(data []byte) (consumed int)
	// OnEOF reports that the client closed its write side.
	OnEOF()
	// OnClose reports that the connection closed.
	OnClose(err error)
	// Drain asks the client to go away gracefully (Connection: close on the
	// next response, GOAWAY in HTTP/2) and closes an idle connection now.
	Drain()
	// Active reports the streams in flight.
	Active() int
}

// IdleHolder is a server codec that can stop taking requests for a
// while (hot restart's connection migration): HoldIdle succeeds only on
// a connection idle between requests (no stream, nothing of the next
// request read, not closing) and leaves what it is given unconsumed
// until ReleaseIdle.
type IdleHolder interface {
	HoldIdle() bool
	ReleaseIdle()
}

// TunnelHolder is a server stream upgraded to a tunnel (101) that a
// migration can stop between two deliveries: with HoldTunnel(true),
// ReadData returns what was read and then ErrTunnelHeld rather than wait
// for more; HoldTunnel(false) makes it wait again.
type TunnelHolder interface {
	HoldTunnel(on bool)
	// TunnelEnded reports that the client's side ended (or failed): the
	// tunnel is half-closed or closing.
	TunnelEnded() bool
}

// ErrTunnelHeld is ReadData's answer on a held tunnel with nothing left.
var ErrTunnelHeld = errors.New("protocol: the tunnel is held for a migration")

// ServerOptions are the connection manager's settings a codec honours.
type ServerOptions struct {
	MaxHeaderBytes int
	MaxHeaders     int
	// BodyBufferLimit bounds the request body bytes buffered between the
	// reader and the worker; over it, reading pauses.
	BodyBufferLimit int
	// Scheme is the :scheme set on requests ("http").
	Scheme string
	// StreamIdleTimeout bounds a response writer's wait for the client's
	// flow-control window (HTTP/2's zero-window stall).
	StreamIdleTimeout time.Duration
	// RequestHeadersTimeout bounds how long a request head may take to
	// arrive, from its first byte (HTTP/1.1: 408 and a close); 0: none.
	RequestHeadersTimeout time.Duration
	// DrainGrace is how long a drained HTTP/1.1 connection that is idle
	// stays open: a request already on its way is still answered (with
	// Connection: close) instead of meeting a closed socket. 0 closes
	// idle connections at once.
	DrainGrace time.Duration
	// HTTP2 tunes the HTTP/2 codec; zero values take its defaults.
	HTTP2 HTTP2Options
}

// HTTP2Options are Envoy's http2_protocol_options that a codec honours.
type HTTP2Options struct {
	MaxConcurrentStreams        uint32
	InitialStreamWindowSize     uint32
	InitialConnectionWindowSize uint32
	// MaxResetsPerSecond caps the streams a peer may reset per second.
	MaxResetsPerSecond uint32
	// Flood bounds, as Envoy's http2_protocol_options name them (0: the
	// codec's default). MaxOutboundControlFrames: control frames the peer
	// provoked (PING and SETTINGS acknowledgements) waiting for the
	// socket. MaxConsecutiveEmptyFrames: DATA frames in a row that carry
	// nothing. MaxPriorityFramesPerStream: PRIORITY frames per opened
	// stream. MaxWindowUpdatesPerDataFrame: WINDOW_UPDATE frames per DATA
	// frame sent.
	MaxOutboundControlFrames     uint32
	MaxConsecutiveEmptyFrames    uint32
	MaxPriorityFramesPerStream   uint32
	MaxWindowUpdatesPerDataFrame uint32
}

// ClientStream is one request on an upstream connection, used by one worker.
type ClientStream interface {
	WriteHeaders(h *Headers, endStream bool) error
	WriteData(p []byte, endStream bool) error
	WriteTrailers(t *Headers) error
	// ReadHeaders fills h with the response headers, skipping interim 1xx
	// answers other than 101.
	ReadHeaders(h *Headers) error
	// EndStream reports, after ReadHeaders, that no body follows.
	EndStream() bool
	// ReadData returns the next piece of the response body, valid until the
	// next call; io.EOF after the last. The last piece may come with io.EOF.
	ReadData() ([]byte, error)
	// Trailers returns the response trailers after ReadData's io.EOF.
	Trailers() *Headers
	// SetDeadline bounds the stream's reads and writes; zero removes it.
	SetDeadline(t time.Time)
	// Close releases the stream; it reports whether the connection may
	// carry another request.
	Close() (reusable bool)
}

// Buffered is implemented by client streams that can tell whether
// ReadData would return without waiting.
type Buffered interface {
	Buffered() bool
}

// Holder is implemented by streams whose writes are queued for a socket
// shared by many streams (HTTP/2): Hold lets the next WriteHeaders or
// WriteData without endStream wait for the write that follows at once,
// so both leave in one socket write.
type Holder interface {
	Hold()
}

// Aborter is implemented by client streams that can be failed from
// another goroutine (full-duplex streams): Abort resets the stream and
// makes its pending and future calls return err.
type Aborter interface {
	Abort(err error)
}

// Continuer is implemented by server streams of protocols with interim
// answers (HTTP/1.1, HTTP/2). A request that carries Expect: 100-continue
// (RFC 9110 §10.1.1) is answered 100 Continue by its first ReadData;
// after ProxyContinue only SendContinue answers it, so the proxy can relay
// the upstream's own 100 Continue (Envoy's proxy_100_continue).
type Continuer interface {
	// ExpectsContinue reports whether the client waits for 100 Continue
	// before it sends the body: it asked, and none was sent yet.
	ExpectsContinue() bool
	// ProxyContinue stops ReadData from answering 100 Continue itself;
	// called before the body is read.
	ProxyContinue()
	// SendContinue writes 100 Continue once; later calls do nothing. On
	// the goroutine that writes the response.
	SendContinue() error
}

// ContinueNotifier is implemented by client streams that report the
// upstream's 100 Continue: f runs on the goroutine that waits in
// ReadHeaders (or AwaitContinue), for each 100 before the final answer.
type ContinueNotifier interface {
	OnContinue(f func())
}

// ContinueAwaiter is implemented by client streams that send the body
// after the headers on the same goroutine (HTTP/1.1): AwaitContinue sends
// the request head and waits until deadline for the upstream's first
// answer, as an RFC 9110 §10.1.1 client may. continued is true when it was
// 100 Continue (reported to OnContinue's f); answered is true when a final
// answer came instead, left for ReadHeaders (the body must not be sent).
// Neither: the deadline passed.
type ContinueAwaiter interface {
	AwaitContinue(deadline time.Time) (continued, answered bool, err error)
}

// Cancelable is implemented by client streams that another goroutine can
// fail while their worker waits on them (the client left): Cancel makes
// the pending and later calls return err, and the connection is not
// reused for another request. Unlike Aborter, it does not make a stream
// full duplex.
type Cancelable interface {
	Cancel(err error)
}

// UpstreamConn is what a client codec needs of an upstream connection.
type UpstreamConn interface {
	net.Conn
	// CodecState is the codec's per-connection state, kept while the
	// connection is pooled.
	CodecState() *any
}

// Codec is a registered protocol.
type Codec struct {
	Name string
	// Match reports whether a connection's first bytes are this protocol's;
	// needMore asks for more bytes before deciding.
	Match     func(prefix []byte) (match, needMore bool)
	NewServer func(c Conn, opts ServerOptions, cb ServerCallbacks) ServerCodec
	// NewClient is set by codecs that carry one request at a time on an
	// upstream connection (HTTP/1.1); NewMux by those that multiplex
	// (HTTP/2, Dubbo).
	NewClient func(c UpstreamConn) ClientStream
	NewMux    func(c net.Conn, opts MuxOptions) MuxConn
	// Resumes says its server codec can take a connection that another
	// process served up to an idle point between two requests (hot
	// restart's connection migration: HTTP/1.1 keep-alive).
	Resumes bool
}

// MuxConn is an upstream connection carrying many streams at once. It
// reads on a goroutine of its own, so it notices a peer's close or GOAWAY
// while idle.
type MuxConn interface {
	// NewStream reserves a stream; ErrMuxFull when the connection is at
	// the peer's concurrency limit, going away or closed.
	NewStream() (ClientStream, error)
	// Capacity reports how many more streams it may open now.
	Capacity() int
	// Active reports the streams open or reserved.
	Active() int
	// Usable reports whether it may take new streams at all.
	Usable() bool
	// IdleSince reports when its last stream ended; zero while busy.
	IdleSince() time.Time
	// Shutdown stops new streams and closes once the open ones end.
	Shutdown()
	Close() error
}

// ErrMuxFull is NewStream's answer when a connection can take no stream.
var ErrMuxFull = errors.New("protocol: connection has no stream available")

// MuxOptions configure a multiplexed upstream connection.
type MuxOptions struct {
	HTTP2 HTTP2Options
	// KeepaliveInterval sends a PING that often; a PING unanswered by the
	// next one closes the connection. Zero disables it.
	KeepaliveInterval time.Duration
	// OnCapacity is called when streams may have become available (a
	// stream ended, the peer raised its limit); OnClose when the
	// connection failed or closed.
	OnCapacity func()
	OnClose    func()
	// MaxBody (framed RPC) bounds the body a reply may declare; 0: the
	// protocol's default.
	MaxBody int
	// Heartbeat (framed RPC) is how often an idle connection sends a
	// heartbeat; 0: the protocol's default, negative: none.
	Heartbeat time.Duration
}

var (
	codecMu sync.RWMutex
	codecs  = map[string]*Codec{}
)

// Register adds a codec; it panics on an empty or duplicate name.
func Register(c *Codec) {
	codecMu.Lock()
	defer codecMu.Unlock()
	if c.Name == "" {
		panic("protocol: Register with empty name")
	}
	if _, dup := codecs[c.Name]; dup {
		panic(fmt.Sprintf("protocol: codec %q registered twice", c.Name))
	}
	codecs[c.Name] = c
}

// Get returns the codec named name.
func Get(name string) (*Codec, error) {
	codecMu.RLock()
	defer codecMu.RUnlock()
	if c, ok := codecs[name]; ok {
		return c, nil
	}
	var names []string
	for n := range codecs {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("protocol %q is not compiled in (have %v)", name, names)
}

// Errors a client stream reports, classified by the proxy.
var (
	// ErrUpstreamReset: the connection closed or failed before the
	// response ended.
	ErrUpstreamReset = errors.New("upstream reset")
	// ErrUpstreamResetBeforeResponse: it closed before any response byte
	// arrived (safe to retry on a fresh connection when the request was
	// replayable).
	ErrUpstreamResetBeforeResponse = errors.New("upstream reset before response started")
	// ErrDownstreamReset: the client went away.
	ErrDownstreamReset = errors.New("downstream reset")
)

// MalformedError is an upstream response that breaks its protocol.
type MalformedError struct{ Reason string }

func (e *MalformedError) Error() string { return "malformed upstream response: " + e.Reason }

// RequestError is a request the codec found malformed after its headers
// were handed on (a bad body framing): the worker answers it with Status
// when no response has started, then the connection closes.
type RequestError struct {
	Status int
	Reason string
}

func (e *RequestError) Error() string { return "bad request: " + e.Reason }
