package http1

import "github.com/straitproxy/strait/protocol"

// Name is the codec's registered name.
const Name = "http1"

func init() {
	protocol.Register(&protocol.Codec{
		Name:      Name,
		Match:     LooksLikeRequest,
		NewServer: newServer,
		NewClient: newClient,
		Resumes:   true,
	})
}
