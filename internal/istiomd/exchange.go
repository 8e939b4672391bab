package istiomd

import (
	"encoding/binary"
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Istio's TCP metadata exchange (the istio.metadata_exchange network
// filters, downstream and upstream): on a TLS connection that negotiated
// the exchange's ALPN protocol (istio-peer-exchange), both ends send,
// before any other byte, a preamble: the magic 0x3D230467 and a length
// (4 bytes each, big-endian), then a serialized google.protobuf.Any
// holding a Struct with the sender's identity under
// "x-envoy-peer-metadata" and its node id under "x-envoy-peer-metadata-id".

// Magic opens a preamble.
const Magic = 0x3D230467

// MaxPreamble bounds a peer's metadata (a workload's identity is a few
// hundred bytes).
const MaxPreamble = 64 << 10

// ExchangeSettings is the filters' config (a TypedStruct of
// envoy.tcp.metadataexchange.config.MetadataExchange).
type ExchangeSettings struct {
	Protocol         string   `json:"protocol"`
	EnableDiscovery  bool     `json:"enable_discovery"`
	AdditionalLabels []string `json:"additional_labels"`
}

// Preamble is node's preamble.
func Preamble(n *corev3.Node, extraLabels []string) ([]byte, error) {
	data := &structpb.Struct{Fields: map[string]*structpb.Value{
		HeaderMetadata: structpb.NewStructValue(Workload(n, extraLabels)),
	}}
	if id := n.GetId(); id != "" {
		data.Fields[HeaderID] = structpb.NewStringValue(id)
	}
	value, err := proto.MarshalOptions{Deterministic: true}.Marshal(data)
	if err != nil {
		return nil, err
	}
	anyb, err := proto.Marshal(&anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Struct", Value: value})
	if err != nil {
		return nil, err
	}
	pre := binary.BigEndian.AppendUint32(nil, Magic)
	pre = binary.BigEndian.AppendUint32(pre, uint32(len(anyb)))
	return append(pre, anyb...), nil
}

// Errors of ParsePreamble.
var (
	// ErrNoMagic: the bytes do not start with a preamble (they pass on
	// as they are).
	ErrNoMagic = errors.New("metadata exchange: no preamble")
	// ErrTooLarge: the preamble says it is larger than MaxPreamble.
	ErrTooLarge = errors.New("metadata exchange: preamble too large")
)

// ParsePreamble reads the peer's preamble at the front of b: its length
// n (0 with a nil error: more bytes are needed) and the peer's identity
// (nil when its metadata does not decode, with bad set).
func ParsePreamble(b []byte) (n int, peer *structpb.Struct, bad bool, err error) {
	if len(b) >= 4 && binary.BigEndian.Uint32(b) != Magic {
		return 0, nil, false, ErrNoMagic
	}
	if len(b) < 8 {
		return 0, nil, false, nil
	}
	size := int(binary.BigEndian.Uint32(b[4:]))
	if size > MaxPreamble {
		return 0, nil, false, fmt.Errorf("%w: %d bytes", ErrTooLarge, size)
	}
	if len(b) < 8+size {
		return 0, nil, false, nil
	}
	var a anypb.Any
	var s structpb.Struct
	if proto.Unmarshal(b[8:8+size], &a) != nil || a.UnmarshalTo(&s) != nil {
		return 8 + size, nil, true, nil
	}
	return 8 + size, s.GetFields()[HeaderMetadata].GetStructValue(), false, nil
}

// Exchange is a metadata exchange filter's built config: the ALPN
// protocol that turns it on, this proxy's preamble, and its counters.
type Exchange struct {
	Protocol string
	Preamble []byte
	// Found, NotFound: the connection negotiated Protocol, or not; Added:
	// the preamble was sent; NoMagic: the peer's bytes are no preamble;
	// NoHeader: the peer's metadata does not decode.
	Found, NotFound, Added, NoMagic, NoHeader Counter
}

// Counter is a stats counter.
type Counter interface{ Inc() }

// NewExchange builds a filter's config: decode fills its
// ExchangeSettings, counter makes its metadata_exchange.* counters.
func NewExchange(decode func(v any) error, node *corev3.Node, counter func(name string) Counter) (*Exchange, error) {
	var s ExchangeSettings
	if err := decode(&s); err != nil {
		return nil, err
	}
	if s.Protocol == "" {
		return nil, errors.New("protocol: required")
	}
	pre, err := Preamble(node, s.AdditionalLabels)
	if err != nil {
		return nil, err
	}
	return &Exchange{Protocol: s.Protocol, Preamble: pre,
		Found: counter("alpn_protocol_found"), NotFound: counter("alpn_protocol_not_found"),
		Added: counter("metadata_added"), NoMagic: counter("initial_header_not_found"),
		NoHeader: counter("header_not_found")}, nil
}
