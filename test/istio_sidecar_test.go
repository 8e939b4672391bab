package test

import (
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
)

// sidecarNodeID is the sidecar's identity: the workload app-1 in the
// namespace default, whose WorkloadEntry and ServiceEntry pilot reads.
const sidecarNodeID = "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local"

const sidecarNode = `node:
  id: ` + sidecarNodeID + `
  cluster: app.default
  metadata:
    NAMESPACE: default
    CLUSTER_ID: Kubernetes
    ISTIO_VERSION: 1.29.0
    LABELS: { app: app }
    INTERCEPTION_MODE: REDIRECT
`

// sidecarConfig: an outbound HTTP service, and the sidecar's own service
// (its WorkloadEntry selected by a ServiceEntry), which makes pilot send
// inbound chains (permissive mTLS: TLS with istio-peer-exchange, and
// plaintext).
const sidecarConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: backend, namespace: default }
spec:
  hosts: [backend.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 18080, name: http, protocol: HTTP }, { number: 18081, name: tcp, protocol: TCP } ]
  endpoints:
  - { address: 127.0.0.1, ports: { http: 1, tcp: 1 } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: app, namespace: default }
spec:
  hosts: [app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 8080, name: http, protocol: HTTP } ]
  workloadSelector: { labels: { app: app } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: app-1, namespace: default }
spec:
  address: 127.0.0.1
  labels: { app: app }
`

// TestIstioSidecarConfig: everything Istio's pilot sends a sidecar is
// accepted, over SotW and delta ADS: the capture listeners (virtualOutbound
// with use_original_dst and the original_dst listener filter,
// virtualInbound with filter_disabled inspectors and Istio's TCP
// metadata exchange), the per-port outbound listeners that bind nothing,
// and the ORIGINAL_DST passthrough clusters (the inbound one bound to
// 127.0.0.6). The capture ports come from the mesh config (free ports
// here, 15001 and 15006 in a pod). Traffic through the capture needs
// iptables, which tests cannot set up: TestUseOriginalDst and
// TestOriginalDstCluster carry it by other means.
func TestIstioSidecarConfig(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			pki := newPKI(t)
			cert, key := pki.issue(t, "app-1", false, "app.default.svc.cluster.local")
			out, in := freePort(t), freePort(t)
			pilot := startPilotWith(t, sidecarConfig, "", "proxyListenPort: "+out+"\nproxyInboundListenPort: "+in+"\n")
			y := testutil.XDSBootstrap("x", pilot.Addr, "127.0.0.1:0", delta)
			y = strings.Replace(y, "node: { id: x, cluster: test }\n", sidecarNode, 1)
			y = withAgentSDSFor(t, y, sidecarNodeID, tlsSecret(t, "default", cert, key), rootCASecret(t, pki.caFile))
			proc := runStrait(t, y, 0, "--log-level", "debug")
			admin := "http://" + proc.admin
			var listeners string
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, listeners = get(t, admin+"/listeners")
				if strings.Contains(listeners, "virtualOutbound::0.0.0.0:"+out) && strings.Contains(listeners, "virtualInbound::0.0.0.0:"+in) &&
					strings.Contains(listeners, "0.0.0.0_18080::0.0.0.0:18080") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("pilot's sidecar listeners are not all serving:\n%s\nrejected %v\n%s", listeners, rejections(t, admin), proc.stderr.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
			if r := rejections(t, admin); len(r) > 0 {
				t.Fatalf("Strait rejected pilot's updates: %v\n%s", r, proc.stderr.String())
			}
			_, clusters := get(t, admin+"/clusters")
			for _, want := range []string{"PassthroughCluster::", "InboundPassthroughCluster::", "outbound|18080||backend.example.com::127.0.0.1:1"} {
				if !strings.Contains(clusters, want) {
					t.Errorf("/clusters lacks %s", want)
				}
			}
			_, dump := get(t, admin+"/config_dump")
			compact := strings.Join(strings.Fields(dump), "")
			for _, want := range []string{`"useOriginalDst":true`, `"bindToPort":false`, `"envoy.filters.listener.original_dst"`,
				`"filterDisabled"`, `"type":"ORIGINAL_DST"`, `"address":"127.0.0.6"`, `envoy.tcp.metadataexchange.config.MetadataExchange`} {
				if !strings.Contains(compact, want) {
					t.Errorf("config_dump lacks %s", want)
				}
			}
			if t.Failed() {
				t.Logf("listeners:\n%s\nconfig_dump:\n%s", listeners, dump[:min(len(dump), 3000)])
			}
		})
	}
}
