package http2

import (
	"bytes"

	"github.com/straitproxy/strait/protocol"
)

// Name is the codec's registered name.
const Name = "http2"

func init() {
	protocol.Register(&protocol.Codec{
		Name:      Name,
		Match:     Match,
		NewServer: newServer,
		NewMux:    newMux,
	})
}

// Match reports whether a connection starts with the HTTP/2 client
// preface (prior knowledge); needMore asks for more bytes.
func Match(prefix []byte) (match, needMore bool) {
	if len(prefix) >= len(clientPreface) {
		return bytes.Equal(prefix[:len(clientPreface)], clientPreface), false
	}
	if bytes.HasPrefix(clientPreface, prefix) {
		return false, true
	}
	return false, false
}
