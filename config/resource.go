package config

import (
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one named xDS resource as accepted: what the managers keep
// of it to build, compare and dump it.
type Resource struct {
	Name string
	// Version is the resource's version (delta) or the version_info of the
	// response that last changed it (state of the world).
	Version string
	Message proto.Message
	Any     *anypb.Any
	// Updated is when it last changed.
	Updated time.Time
	// TTL is the time to live the server gave it (0: none): the resource
	// expires unless a heartbeat or an update comes within it.
	TTL time.Duration
	// Aliases are the other names the server gave it (delta; VHDS answers
	// a virtual host asked for as "<route config>/<host>" this way).
	Aliases []string
}

// Namespace is the namespace of a resource name (VHDS's
// "<route config>/<host>"): what comes before its last '/'.
func Namespace(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return ""
}
