package test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// mxPreamble is an istio-peer-exchange preamble carrying fields.
func mxPreamble(t *testing.T, fields map[string]any) []byte {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := anypb.New(s)
	b, _ := proto.Marshal(a)
	out := binary.BigEndian.AppendUint32(nil, 0x3D230467)
	return append(binary.BigEndian.AppendUint32(out, uint32(len(b))), b...)
}

// TestIstioTCPMetadataExchange: a cluster's istio.metadata_exchange filter,
// on a TLS connection that negotiated istio-peer-exchange, sends this
// proxy's identity first and takes the peer's off the front of the
// stream, so the bytes between client and upstream pass untouched; on a
// connection that negotiated anything else it does nothing.
func TestIstioTCPMetadataExchange(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "upstream", false, "up.example")
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	told := make(chan *structpb.Struct, 4)
	serve := func(protos []string) string {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: protos})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					tc := c.(*tls.Conn)
					if tc.Handshake() != nil {
						return
					}
					if tc.ConnectionState().NegotiatedProtocol == "istio-peer-exchange" {
						var h [8]byte
						if _, err := io.ReadFull(c, h[:]); err != nil || binary.BigEndian.Uint32(h[:]) != 0x3D230467 {
							return
						}
						b := make([]byte, binary.BigEndian.Uint32(h[4:]))
						io.ReadFull(c, b)
						var a anypb.Any
						var s structpb.Struct
						if proto.Unmarshal(b, &a) != nil || a.UnmarshalTo(&s) != nil {
							return
						}
						told <- &s
						c.Write(mxPreamble(t, map[string]any{"x-envoy-peer-metadata": map[string]any{"NAME": "backend-1"}}))
					}
					io.Copy(c, c) // echo
				}()
			}
		}()
		return ln.Addr().String()
	}
	run := func(addr string) string {
		y := `
node:
  id: router~10.0.0.1~gw-1.ns~ns.svc.cluster.local
  metadata: { NAME: gw-1, NAMESPACE: ns }
` + tcpBootstrap(addr) + `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: up.example
        common_tls_context: { alpn_protocols: [istio-peer-exchange, istio] }
    filters:
    - name: istio.metadata_exchange
      typed_config:
        "@type": type.googleapis.com/udpa.type.v1.TypedStruct
        type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
        value: { protocol: istio-peer-exchange, enable_discovery: true }
`
		p := startProxy(t, y)
		c, err := net.Dial("tcp", p.addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "ping")
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
			t.Fatalf("echo: %q %v", got, err)
		}
		return strings.Join([]string{
			strconv.FormatInt(p.stat("cluster.echo.metadata_exchange.alpn_protocol_found"), 10),
			strconv.FormatInt(p.stat("cluster.echo.metadata_exchange.alpn_protocol_not_found"), 10),
			strconv.FormatInt(p.stat("cluster.echo.metadata_exchange.metadata_added"), 10),
			strconv.FormatInt(p.stat("cluster.echo.metadata_exchange.initial_header_not_found"), 10)}, ",")
	}
	if got := run(serve([]string{"istio-peer-exchange"})); got != "1,0,1,0" {
		t.Fatalf("exchange: found,not found,added,no magic = %s", got)
	}
	s := <-told
	md := s.GetFields()["x-envoy-peer-metadata"].GetStructValue().GetFields()
	if s.GetFields()["x-envoy-peer-metadata-id"].GetStringValue() != "router~10.0.0.1~gw-1.ns~ns.svc.cluster.local" || md["NAME"].GetStringValue() != "gw-1" {
		t.Fatalf("the upstream was told %v", s)
	}
	if got := run(serve([]string{"istio"})); got != "0,1,0,0" {
		t.Fatalf("no exchange: found,not found,added,no magic = %s", got)
	}
}

// TestIstioTCPMetadataExchangeInbound: the listener side (pilot's
// sidecar inbound chains): on a TLS connection that negotiated
// istio-peer-exchange the filter takes the client's preamble off the
// stream and answers with this proxy's before the upstream's bytes; the
// bytes between them pass untouched, also when they come in the
// preamble's packet. Another ALPN: nothing is added or taken.
func TestIstioTCPMetadataExchangeInbound(t *testing.T) {
	pki := newPKI(t)
	cert, key := pki.issue(t, "server", false, "localhost")
	y := `
node:
  id: sidecar~127.0.0.1~app-1.ns~ns.svc.cluster.local
  metadata: { NAME: app-1, NAMESPACE: ns }
` + strings.Replace(tcpBootstrap(testutil.StartEcho(t)), "    - filters:\n", `    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [istio-peer-exchange, istio]
            tls_certificates: [ { certificate_chain: { filename: `+cert+` }, private_key: { filename: `+key+` } } ]
      filters:
      - name: istio.metadata_exchange
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
          value: { protocol: istio-peer-exchange }
`, 1)
	p := startProxy(t, y)
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	dial := func(alpn string) *tls.Conn {
		c, err := tls.Dial("tcp", p.addr("tcp"), &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{alpn}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	c := dial("istio-peer-exchange")
	// The preamble and the first bytes in one write.
	c.Write(append(mxPreamble(t, map[string]any{"x-envoy-peer-metadata": map[string]any{"NAME": "client-1"}}), "ping"...))
	var h [8]byte
	if _, err := io.ReadFull(c, h[:]); err != nil || binary.BigEndian.Uint32(h[:]) != 0x3D230467 {
		t.Fatalf("no preamble first: %x %v", h, err)
	}
	b := make([]byte, binary.BigEndian.Uint32(h[4:]))
	io.ReadFull(c, b)
	var a anypb.Any
	var s structpb.Struct
	if proto.Unmarshal(b, &a) != nil || a.UnmarshalTo(&s) != nil ||
		s.GetFields()["x-envoy-peer-metadata-id"].GetStringValue() != "sidecar~127.0.0.1~app-1.ns~ns.svc.cluster.local" ||
		s.GetFields()["x-envoy-peer-metadata"].GetStructValue().GetFields()["NAME"].GetStringValue() != "app-1" {
		t.Fatalf("the client was told %v", &s)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo: %q %v (the client's preamble must not reach the upstream)", got, err)
	}
	// Another ALPN: a plain echo.
	c = dial("istio")
	io.WriteString(c, "pong")
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong" {
		t.Fatalf("echo without the exchange: %q %v", got, err)
	}
	// Hostile bytes on the exchange's ALPN: no magic passes through as it
	// is; a preamble claiming 2 GiB closes the connection, unread.
	c = dial("istio-peer-exchange")
	io.WriteString(c, "nomagic!")
	got = make([]byte, 8)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "nomagic!" {
		t.Fatalf("bytes without the magic: %q %v", got, err)
	}
	c = dial("istio-peer-exchange")
	c.Write(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0x3D230467), 1<<31))
	if n, err := c.Read(make([]byte, 16)); err == nil {
		t.Fatalf("a 2 GiB preamble: read %d bytes, want the connection closed", n)
	}
	for stat, want := range map[string]int64{"alpn_protocol_found": 3, "alpn_protocol_not_found": 1, "metadata_added": 1, "initial_header_not_found": 1, "header_not_found": 1} {
		if n := p.stat("metadata_exchange." + stat); n != want {
			t.Errorf("metadata_exchange.%s = %d, want %d", stat, n, want)
		}
	}
}
