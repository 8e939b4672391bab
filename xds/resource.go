// Package xds is the ADS client: one gRPC stream to a management server,
// state of the world (GRPC) or incremental (DELTA_GRPC), carrying LDS,
// RDS, CDS, EDS and SDS. It keeps each type's subscription, version and
// nonce, hands every response's resulting set to a Handler (the server,
// which builds it with the same builders as the static config), and ACKs
// or NACKs by the Handler's answer. It knows nothing of listeners or
// clusters beyond their names.
package xds

import (
	"fmt"
	"time"

	"github.com/straitproxy/strait/config"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The resource types, by type URL.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	RuntimeType  = "type.googleapis.com/envoy.service.runtime.v3.Runtime"
	// ScopedRouteType is SRDS.
	ScopedRouteType = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
	// VirtualHostType is VHDS: delta only, named "<route config>/<host>"
	// (see Namespaced).
	VirtualHostType = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
	resourceType    = "type.googleapis.com/envoy.service.discovery.v3.Resource"
)

// Resource is one named resource as accepted (config.Resource, which the
// managers below xds keep).
type Resource = config.Resource

func newMessage(url string) (proto.Message, error) {
	switch url {
	case ListenerType:
		return &listenerv3.Listener{}, nil
	case RouteType:
		return &routev3.RouteConfiguration{}, nil
	case ClusterType:
		return &clusterv3.Cluster{}, nil
	case EndpointType:
		return &endpointv3.ClusterLoadAssignment{}, nil
	case SecretType:
		return &tlsv3.Secret{}, nil
	case RuntimeType:
		return &runtimev3.Runtime{}, nil
	case ScopedRouteType:
		return &routev3.ScopedRouteConfiguration{}, nil
	case VirtualHostType:
		return &routev3.VirtualHost{}, nil
	}
	return nil, fmt.Errorf("unknown resource type %q", url)
}

// nameOf is the name a resource is known by.
func nameOf(m proto.Message) string {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *tlsv3.Secret:
		return r.GetName()
	case *runtimev3.Runtime:
		return r.GetName()
	case *routev3.ScopedRouteConfiguration:
		return r.GetName()
	case *routev3.VirtualHost:
		return r.GetName()
	}
	return ""
}

// decode unpacks one resource of type url (unwrapping a discovery
// Resource wrapper, whose TTL overrides ttl); name is the delta resource's
// name, "" to take it from the message. A heartbeat (a wrapper with a TTL
// and no resource) has no Message.
func decode(url string, a *anypb.Any, name, version string, ttl time.Duration) (*Resource, error) {
	if a.GetTypeUrl() == resourceType {
		var w discoveryv3.Resource
		if err := a.UnmarshalTo(&w); err != nil {
			return nil, err
		}
		if name == "" {
			name = w.GetName()
		}
		if w.GetVersion() != "" {
			version = w.GetVersion()
		}
		ttl = w.GetTtl().AsDuration()
		if w.GetResource() == nil {
			if ttl <= 0 || name == "" {
				return nil, fmt.Errorf("a Resource wrapper without a resource or a TTL")
			}
			return &Resource{Name: name, Version: version, TTL: ttl}, nil // a TTL heartbeat
		}
		a = w.GetResource()
	}
	if a.GetTypeUrl() != url {
		return nil, fmt.Errorf("type %q in a response for %q", a.GetTypeUrl(), url)
	}
	m, err := newMessage(url)
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, fmt.Errorf("cannot decode %s: %w", url, err)
	}
	own := nameOf(m)
	if name == "" {
		name = own
	}
	if name == "" {
		return nil, fmt.Errorf("resource without a name")
	}
	if own != name {
		return nil, fmt.Errorf("resource named %q carries %q", name, own)
	}
	return &Resource{Name: name, Version: version, Message: m, Any: a, Updated: time.Now(), TTL: ttl}, nil
}

// Namespaced reports whether url's names are namespaces: a subscription
// to "a" also takes "a/x" (VHDS subscribes to a route configuration's
// virtual hosts by its name), and a resource the server does not know is
// answered with an empty resource whose aliases name what was asked for;
// it is kept, without a Message, so that whoever waited learns the answer.
func Namespaced(url string) bool { return url == VirtualHostType }

// wanted reports whether a subscription to names takes the resource r
// (exact names; for a namespaced type, also by namespace or alias; the
// server's empty answer for a name only by that name or an alias, as it
// answers one request).
func wanted(url string, names map[string]bool, r *Resource) bool {
	if names[r.Name] {
		return true
	}
	if !Namespaced(url) {
		return false
	}
	if ns := config.Namespace(r.Name); ns != "" && names[ns] && r.Message != nil {
		return true
	}
	for _, a := range r.Aliases {
		if names[a] {
			return true
		}
	}
	return false
}

// Holds reports whether the client's subscription to url takes r now:
// a resource it delivered that its names no longer take is not its any
// more.
func (c *Client) Holds(url string, r *Resource) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.types[url]
	if ts == nil {
		return false
	}
	return ts.wildcard || wanted(url, ts.names, r)
}
