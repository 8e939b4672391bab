package dubbo

import (
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/rpc"
)

func init() {
	protocol.Register(rpc.NewCodec(Codec{}, rpc.Options{}))
	rpc.Register(Name, func(o rpc.ReadOptions) rpc.Codec {
		return Codec{Attachments: o.Attachments, Params: o.Params}
	})
}
