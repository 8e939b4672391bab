// Package rpcinspector is strait.filters.listener.rpc_inspector: it reads
// the start of a plaintext connection without consuming it and, when the
// bytes are one of the configured protocols' (Dubbo's magic), records that
// protocol's name as the application protocol, so that
// filter_chain_match.application_protocols sends Dubbo to a dubbo_proxy
// chain and HTTP/1.1 and HTTP/2 to an HTTP connection manager on the same
// port. Envoy has no such filter; its config is a TypedStruct
// (README.md).
package rpcinspector

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/rpc"
	"github.com/straitproxy/strait/stats"
)

// Name and TypeURL name the filter and its config.
const (
	Name    = "strait.filters.listener.rpc_inspector"
	TypeURL = "type.googleapis.com/strait.filters.listener.rpc_inspector.v1.RpcInspector"
)

func init() {
	filter.RegisterListenerStruct(Name, TypeURL, func(bc *filter.BuildContext, m proto.Message) (filter.ListenerFilter, error) {
		return build(bc, m.(*structpb.Struct))
	})
}

type settings struct {
	// Protocols are the codecs to recognise, by name ("dubbo").
	Protocols []string `json:"protocols"`
}

type candidate struct {
	name  string
	match func([]byte) (bool, bool)
	found *stats.Counter
}

type inspector struct {
	protos   []candidate
	notFound *stats.Counter
}

func build(bc *filter.BuildContext, m *structpb.Struct) (*inspector, error) {
	var s settings
	if err := config.DecodeStruct(m, &s); err != nil {
		return nil, err
	}
	if len(s.Protocols) == 0 {
		return nil, config.At("protocols", errors.New("is required"))
	}
	sc := bc.Stats.Scope("rpc_inspector", "", "")
	in := &inspector{notFound: sc.Counter("rpc_not_found")}
	for i, name := range s.Protocols {
		if _, err := rpc.Lookup(name); err != nil {
			return nil, config.At(fmt.Sprintf("protocols[%d]", i), fmt.Errorf("%q is not a framed RPC protocol compiled in", name))
		}
		c, err := protocol.Get(name)
		if err != nil {
			return nil, config.At(fmt.Sprintf("protocols[%d]", i), err)
		}
		in.protos = append(in.protos, candidate{name: name, match: c.Match, found: sc.Counter(name + "_found")})
	}
	return in, nil
}

// Inspect implements filter.ListenerFilter.
func (in *inspector) Inspect(data []byte, info *network.ConnInfo) (bool, error) {
	if info.TransportProtocol != "" && info.TransportProtocol != "raw_buffer" {
		return true, nil
	}
	more := false
	for _, p := range in.protos {
		match, needMore := p.match(data)
		if match {
			p.found.Inc()
			info.ApplicationProtocols = []string{p.name}
			return true, nil
		}
		more = more || needMore
	}
	if more {
		return false, nil
	}
	in.notFound.Inc()
	return true, nil
}
