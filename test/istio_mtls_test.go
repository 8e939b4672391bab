package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/straitproxy/strait/internal/testutil"
)

// gatewayNodeID is gatewayNode's id.
const gatewayNodeID = "router~10.0.0.1~ingress.istio-system~istio-system.svc.cluster.local"

// withAgentSDS adds to a gateway's bootstrap the static cluster sds-grpc,
// through which pilot's auto-mTLS sockets ask for the workload's
// certificate ("default") and the mesh's root CA ("ROOTCA"): in a pod it
// is the istio-agent's SDS server on a unix socket; here a
// go-control-plane server serving those two secrets to the gateway's
// node.
func withAgentSDS(t *testing.T, y string, secrets ...types.Resource) string {
	t.Helper()
	return withAgentSDSFor(t, y, gatewayNodeID, secrets...)
}

// withAgentSDSFor is withAgentSDS for the node nodeID.
func withAgentSDSFor(t *testing.T, y, nodeID string, secrets ...types.Resource) string {
	t.Helper()
	cp := startControlPlane(t, "")
	snap, err := cache.NewSnapshot("1", map[resource.Type][]types.Resource{resource.SecretType: secrets})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
	sds := testutil.XDSBootstrap("x", cp.addr, "127.0.0.1:0", false)
	sds = strings.ReplaceAll(sds[strings.Index(sds, "  - name: xds_cluster"):], "xds_cluster", "sds-grpc")
	return y + sds
}

// rootCASecret is istio-agent's ROOTCA: the mesh's root CA (caFile).
func rootCASecret(t *testing.T, caFile string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: dsBytes(must(os.ReadFile(caFile)))}}}
}

// TestIstioGatewayAutoMTLS: a MESH_INTERNAL ServiceEntry whose endpoints
// are an in-mesh workload (label security.istio.io/tlsMode: istio) and a
// plain one. Pilot's auto mTLS sends the cluster with
// transport_socket_matches: ISTIO_MUTUAL (the workload certificate and
// root CA by SDS from sds-grpc) for endpoints whose metadata says
// tlsMode: istio, plaintext for the others. Both answer through the
// gateway, the in-mesh one over mTLS with the gateway's workload
// certificate; nothing is NACKed; SotW and delta.
func TestIstioGatewayAutoMTLS(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			pki := newPKI(t)
			mesh, cc, ck := mtlsUpstream(t, pki)
			plain := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello plain")) }, false)
			_, ps, _ := net.SplitHostPort(closedPort(t))
			port, _ := strconv.Atoi(ps)
			// The in-mesh endpoint carries Istio's tlsMode label.
			_, mp, _ := net.SplitHostPort(mesh)
			cfg := strings.NewReplacer("MESH_EXTERNAL", "MESH_INTERNAL", "ports: { http: "+mp+" } }",
				"ports: { http: "+mp+" }, labels: { security.istio.io/tlsMode: istio } }").Replace(istioBase(port, mesh, plain)) + istioRoute
			if !strings.Contains(cfg, "tlsMode") {
				t.Fatal("no in-mesh endpoint in the config")
			}
			pilot := startPilot(t, cfg)
			y := withAgentSDS(t, istioGateway(pilot.Addr, delta), tlsSecret(t, "default", cc, ck), rootCASecret(t, pki.caFile))
			proc := runStrait(t, y, 0, "--log-level", "debug")
			admin := "http://" + proc.admin
			c := &http.Client{Timeout: 3 * time.Second}
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			code, got := awaitGateway(func() (int, string) { return body(c, url) })
			if code != 200 {
				t.Fatalf("through the gateway: %d %q; rejected %v\n%s", code, got, rejections(t, admin), proc.stderr.String())
			}
			// Pilot's LEAST_REQUEST picks between idle hosts at random:
			// ask until both have answered, at most 100 times.
			seen := map[string]int{}
			for i := 0; i < 100 && (seen["hello plain"] == 0 || seen["hello proxy"] == 0); i++ {
				code, got := body(c, url)
				if code != 200 {
					t.Fatalf("%d %q\n%s", code, got, proc.stderr.String())
				}
				seen[got]++
			}
			// mtlsUpstream answers with the client certificate's name: the
			// workload certificate that came by SDS.
			if seen["hello plain"] == 0 || seen["hello proxy"] == 0 {
				t.Fatalf("answers %v: want the plaintext endpoint and the in-mesh one over mTLS\n%s", seen, proc.stderr.String())
			}
			if r := rejections(t, admin); len(r) > 0 {
				t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
			}
		})
	}
}
