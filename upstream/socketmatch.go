package upstream

import (
	"errors"
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Transport socket matches (a cluster's transport_socket_matches): each
// host's connections use the first match whose fields all equal the
// host's endpoint metadata under envoy.transport_socket_match (an empty
// match takes every host), else the cluster's transport_socket. This is
// how Istio's auto mTLS speaks mTLS to in-mesh endpoints (metadata
// tlsMode: istio) and plaintext to the others, on one cluster.
//
// A host's socket is resolved when the host is made; an endpoint whose
// metadata comes to resolve another socket becomes a new host (its
// pooled connections were made with the old one).

// socketMatchKey is the endpoint metadata filter matches are read from.
const socketMatchKey = "envoy.transport_socket_match"

// hostSocket is one transport socket a cluster's hosts may use.
type hostSocket struct {
	name   string                     // the match's name; "" for transport_socket
	fields map[string]*structpb.Value // what the endpoint's metadata must hold
	socket transport.Upstream         // nil: raw_buffer
	// matched counts the hosts resolved to it (Envoy's total_match_count;
	// nil on a Cluster not made by BuildCluster).
	matched *stats.Counter
}

// buildSockets builds the cluster's transport_socket and its
// transport_socket_matches.
func (c *Cluster) buildSockets(cl *clusterv3.Cluster, bc *transport.BuildContext) error {
	def, err := transport.BuildUpstream(bc, cl.GetTransportSocket())
	if err != nil {
		return config.At("transport_socket", err)
	}
	c.defSocket = &hostSocket{socket: def}
	for i, m := range cl.GetTransportSocketMatches() {
		path := fmt.Sprintf("transport_socket_matches[%d]", i)
		s := &hostSocket{name: m.GetName(), fields: m.GetMatch().GetFields()}
		if m.GetTransportSocket() == nil {
			return config.At(path+".transport_socket", errors.New("required"))
		}
		if s.socket, err = transport.BuildUpstream(bc, m.GetTransportSocket()); err != nil {
			return config.At(path+".transport_socket", err)
		}
		c.sockets = append(c.sockets, s)
	}
	return nil
}

// countMatches gives the sockets their stats once the cluster is built:
// Envoy's cluster.<name>.default.total_match_count, and
// cluster.<name>.<match>.total_match_count per match (matches of one name
// share theirs).
func (c *Cluster) countMatches(sc *stats.Scope) {
	c.defSocket.matched = sc.Counter("default.total_match_count")
	for _, s := range c.sockets {
		s.matched = sc.Counter(s.name + ".total_match_count")
	}
}

// socketFor resolves the socket of an endpoint with metadata md.
func (c *Cluster) socketFor(md *corev3.Metadata) *hostSocket {
	if len(c.sockets) == 0 {
		return c.defSocket
	}
	var have map[string]*structpb.Value
	if st := md.GetFilterMetadata()[socketMatchKey]; st != nil {
		have = st.GetFields()
	}
next:
	for _, s := range c.sockets {
		for k, want := range s.fields {
			got, ok := have[k]
			if !ok || !proto.Equal(got, want) {
				continue next
			}
		}
		return s
	}
	return c.defSocket
}

// secretsWait is how long the cluster warms on its sockets' secrets
// (transport.SecretsWait; 0: for ever).
func (c *Cluster) secretsWait() (time.Duration, bool) {
	var s []any
	for _, ts := range c.Sockets() {
		s = append(s, ts) // raw_buffer (nil) never waits
	}
	return transport.SecretsWait(s...)
}

// Sockets is the cluster's transport sockets: its transport_socket, then
// each match's (nil entries are raw_buffer), for the admin's /certs.
func (c *Cluster) Sockets() []transport.Upstream {
	if c.defSocket == nil {
		return nil
	}
	out := []transport.Upstream{c.defSocket.socket}
	for _, s := range c.sockets {
		out = append(out, s.socket)
	}
	return out
}

// allTLS reports whether every socket hosts may use is not raw_buffer
// (auto_config negotiates by ALPN on each).
func (c *Cluster) allTLS() bool {
	if c.defSocket.socket == nil {
		return false
	}
	for _, s := range c.sockets {
		if s.socket == nil {
			return false
		}
	}
	return true
}
