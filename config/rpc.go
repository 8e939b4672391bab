package config

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/types/known/structpb"
)

// MaxRPCBody bounds rpc_max_body_bytes, on clusters and listeners.
const MaxRPCBody = 1 << 30

// RPCBodyLimit reads an rpc_max_body_bytes value (a listener's or a
// cluster's strait metadata): a whole number of bytes from 1 KiB to
// MaxRPCBody.
func RPCBodyLimit(v *structpb.Value) (int, error) {
	f, ok := v.GetKind().(*structpb.Value_NumberValue)
	if !ok || f.NumberValue != math.Trunc(f.NumberValue) || f.NumberValue < 1024 || f.NumberValue > MaxRPCBody {
		return 0, fmt.Errorf("a whole number of bytes from 1024 to %d", MaxRPCBody)
	}
	return int(f.NumberValue), nil
}
