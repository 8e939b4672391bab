// Package originaldst is envoy.filters.listener.original_dst: as a
// connection is accepted it reads the destination the connection had
// before an iptables REDIRECT or DNAT sent it to this listener (the
// conntrack entry's, SO_ORIGINAL_DST) and makes that the connection's
// local address: filter chains match on it, an ORIGINAL_DST cluster
// connects to it, and a listener with use_original_dst hands the
// connection to the listener of that address. Without a conntrack entry
// (no netfilter, or a connection it does not track) the connection keeps
// its own local address, not restored.
package originaldst

import (
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.listener.original_dst"

func init() {
	filter.RegisterListener(Name, &originaldstv3.OriginalDst{}, build)
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.listener.original_dst.v3.OriginalDst": ``,
})

type originalDst struct{}

func build(_ *filter.BuildContext, m proto.Message) (filter.ListenerFilter, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	return originalDst{}, nil
}

// OnAccept implements filter.AcceptFilter.
func (originalDst) OnAccept(c *network.Conn) error {
	dst, err := network.OriginalDst(c.Socket())
	if err != nil || dst == nil {
		return nil // not redirected: its own address stands
	}
	// Restored also when it is the socket's own address (conntrack
	// knows connections that were not redirected): a use_original_dst
	// listener then hands it to the listener of that address, as Envoy's.
	c.RestoreLocalAddr(dst)
	return nil
}

// Inspect implements filter.ListenerFilter (not called: OnAccept does
// the work).
func (originalDst) Inspect([]byte, *network.ConnInfo) (bool, error) { return true, nil }
