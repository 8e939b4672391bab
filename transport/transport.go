// Package transport is the transport-socket seam: what sits between a
// connection's socket and its network filters (TLS, TLCP; raw_buffer is
// none). A transport socket is an extension registered by the type URL
// of its config, from its own folder, and built per filter chain.
//
// This first slice wraps the socket of an accepted connection before the
// I/O model starts it; the socket it returns is read and written by the
// model as any socket. That works under netpoll, whose reader may block;
// under epoll a wrapped socket would block a poller, so a transport that
// needs a blocking socket is refused there (docs/design/transport-sockets.md
// has the plan that lifts this).
package transport

import (
	"fmt"
	"log/slog"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/network"
	"google.golang.org/protobuf/proto"
)

// Downstream is a built transport socket for accepted connections,
// shared by every connection of its filter chain.
type Downstream interface {
	// Wrap returns the socket the connection reads and writes through
	// instead of s. The handshake, if any, happens on the first read.
	Wrap(s network.Socket) (network.Socket, error)
}

// BuildContext is what a transport socket's builder may use.
type BuildContext struct {
	Log *slog.Logger
}

// Builder builds a downstream transport socket from its decoded,
// validated config.
type Builder func(bc *BuildContext, cfg proto.Message) (Downstream, error)

// Register registers a downstream transport socket by name and config type.
func Register(name string, cfg proto.Message, b Builder) {
	config.Register(config.Extension{Kind: config.DownstreamTransport, Name: name,
		TypeURL: "type.googleapis.com/" + string(cfg.ProtoReflect().Descriptor().FullName()), Factory: b})
}

// RawBufferName is the plain transport socket: bytes as they are.
const RawBufferName = "envoy.transport_sockets.raw_buffer"

func init() {
	Register(RawBufferName, &rawbufferv3.RawBuffer{}, func(*BuildContext, proto.Message) (Downstream, error) { return nil, nil })
}

// Build builds a filter chain's transport_socket; nil (and no error) is
// raw_buffer, the connection's own socket.
func Build(bc *BuildContext, ts *corev3.TransportSocket) (Downstream, error) {
	if ts == nil {
		return nil, nil
	}
	typed := ts.GetTypedConfig()
	if typed == nil {
		if ts.GetName() == RawBufferName || ts.GetName() == "raw_buffer" {
			return nil, nil
		}
		return nil, config.At("typed_config", fmt.Errorf("required"))
	}
	ext, err := config.Lookup(config.DownstreamTransport, typed.GetTypeUrl())
	if err != nil {
		return nil, config.At("typed_config", err)
	}
	msg, err := typed.UnmarshalNew()
	if err != nil {
		return nil, config.At("typed_config", err)
	}
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		if errs := config.ValidationErrors(v.ValidateAll()); len(errs) > 0 {
			return nil, config.At("typed_config", config.Join(errs))
		}
	}
	d, err := ext.Factory.(Builder)(bc, msg)
	return d, config.At("typed_config", err)
}
