package test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestXDSOverTLS (issue 12, item 6): the ADS cluster with an
// UpstreamTlsContext reaches a go-control-plane server that only speaks
// gRPC over TLS (ALPN h2, which grpc-go requires), and its config serves.
func TestXDSOverTLS(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "xds", false, "xds.example")
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	snaps := cache.NewSnapshotCache(false, cache.IDHash{}, nil)
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{kp}})))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, xdsserver.NewServer(context.Background(), snaps, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)

	up := named(t, "over-tls")
	laddr := "127.0.0.1:" + freePort(t)
	snap, err := cache.NewSnapshot("1", map[resource.Type][]types.Resource{
		resource.ListenerType: {testutil.XDSListener("l", laddr, "r", "")},
		resource.RouteType:    {testutil.XDSRoute("r", "c", "")},
		resource.ClusterType:  {testutil.XDSCluster("c")},
		resource.EndpointType: {testutil.XDSEndpoints("c", up)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.SetSnapshot(context.Background(), "strait-test", snap); err != nil {
		t.Fatal(err)
	}
	boot := xdsBootstrap(ln.Addr().String(), false)
	tlsBlock := `    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: xds.example
        common_tls_context: { validation_context: { trusted_ca: { filename: ` + pki.caFile + ` } } }
    typed_extension_protocol_options:`
	withTLS := strings.Replace(boot, "    connect_timeout: 1s\n    typed_extension_protocol_options:", tlsBlock, 1)
	if withTLS == boot {
		t.Fatal("the bootstrap's xds_cluster changed shape")
	}
	startProxy(t, withTLS)
	waitBody(t, "http://"+laddr+"/", "over-tls", 10*time.Second)
}
