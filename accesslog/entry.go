// Package accesslog is Envoy's access logging: an Entry describes one
// finished stream (or connection), a Formatter renders it with Envoy's
// command operators (text or JSON), a Filter decides whether it is
// logged, and a Sink writes lines off the request path (sink.go). The
// access logger extensions (file, stdout, stderr) register from this
// package's init; connection managers, tcp_proxy and listeners build
// their access_log lists with Build.
package accesslog

import (
	"crypto/tls"
	"net"
	"time"
)

// Headers is a header map the log reads (protocol.Headers): names are
// lowercase.
type Headers interface {
	Get(name string) ([]byte, bool)
}

// Conn is the downstream connection as the log reads it
// (network.Conn); its TLS state is read only by operators that need it.
type Conn interface {
	RemoteAddr() net.Addr
	LocalAddr() net.Addr
	TLSState() (tls.ConnectionState, bool)
}

// Unknown marks a duration not reached (a response that never came):
// its operators print "-".
const Unknown time.Duration = -1

// Entry is one finished stream or connection. The writer fills what it
// knows; zero strings and nil values print "-". An Entry and what it
// points to are read only during Log.
type Entry struct {
	Start time.Time
	// Duration is the whole stream's (connection's) time;
	// RequestDuration until the request's last byte was read,
	// ResponseDuration until the upstream's first response byte,
	// ResponseTxDuration from that byte to the last one sent (each
	// Unknown when not reached).
	Duration, RequestDuration, ResponseDuration, ResponseTxDuration time.Duration

	// Request, Response and Trailers are nil when absent (a local reply's
	// response headers are its Response).
	Request, Response, Trailers Headers
	Protocol                    string
	// ResponseCode is 0 when no response was sent.
	ResponseCode        int
	ResponseCodeDetails string
	Flags               Flags
	// BytesReceived and BytesSent are body bytes for HTTP, all bytes for
	// a TCP connection.
	BytesReceived, BytesSent uint64

	UpstreamHost, UpstreamCluster string
	UpstreamLocal                 net.Addr
	UpstreamTransportFailure      string
	// Attempts is how many upstream attempts were made.
	Attempts  int
	RouteName string

	Conn Conn
	// ServerName is the SNI the client asked for ("": none).
	ServerName         string
	TerminationDetails string
	ConnectionID       uint64
}
