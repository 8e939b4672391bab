// Package tlsinspector is envoy.filters.listener.tls_inspector: it reads
// the ClientHello of a TLS (or TLCP) connection without consuming it and
// records the transport protocol "tls", the SNI and the offered ALPN
// protocols, so that filter chains can be chosen on them and TLS, TLCP
// and plaintext can share a port. Bytes that are not a ClientHello leave
// the connection "raw_buffer".
package tlsinspector

import (
	"errors"

	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.listener.tls_inspector"

func init() {
	filter.RegisterListener(Name, &tlsinspectorv3.TlsInspector{}, build)
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector": `max_client_hello_size
		close_connection_on_client_hello_parsing_errors -initial_read_buffer_size`,
})

// inspector is one built tls_inspector.
type inspector struct {
	limit   int
	closeOn bool // close_connection_on_client_hello_parsing_errors
	// Envoy's tls_inspector.* counters.
	tlsFound, tlsNotFound, tooLarge, sniFound, sniNotFound, alpnFound, alpnNotFound *stats.Counter
}

func build(bc *filter.BuildContext, m proto.Message) (filter.ListenerFilter, error) {
	cfg := m.(*tlsinspectorv3.TlsInspector)
	if err := supported.Check(cfg); err != nil {
		return nil, err
	}
	in := &inspector{limit: transport.MaxClientHello, closeOn: cfg.GetCloseConnectionOnClientHelloParsingErrors()}
	if v := cfg.GetMaxClientHelloSize(); v != nil {
		if v.GetValue() == 0 || v.GetValue() > 64<<10 {
			return nil, config.At("max_client_hello_size", errors.New("must be 1..65536"))
		}
		in.limit = int(v.GetValue())
	}
	sc := bc.Stats.Scope("tls_inspector", "", "")
	in.tlsFound, in.tlsNotFound, in.tooLarge = sc.Counter("tls_found"), sc.Counter("tls_not_found"), sc.Counter("client_hello_too_large")
	in.sniFound, in.sniNotFound = sc.Counter("sni_found"), sc.Counter("sni_not_found")
	in.alpnFound, in.alpnNotFound = sc.Counter("alpn_found"), sc.Counter("alpn_not_found")
	return in, nil
}

// errParse closes a connection whose ClientHello does not parse, when
// close_connection_on_client_hello_parsing_errors is set.
var errParse = errors.New("tls_inspector: the ClientHello does not parse")

// Inspect implements filter.ListenerFilter.
func (in *inspector) Inspect(data []byte, info *network.ConnInfo) (bool, error) {
	h, more, err := transport.ParseClientHello(data, in.limit)
	switch {
	case more:
		return false, nil
	case err != nil:
		if errors.Is(err, transport.ErrHelloTooLarge) {
			in.tooLarge.Inc()
		} else {
			in.tlsNotFound.Inc()
		}
		if in.closeOn {
			return true, errParse
		}
		return true, nil
	}
	in.tlsFound.Inc()
	info.TransportProtocol = "tls"
	if h.Version == transport.VersionTLCP {
		// A TLCP ClientHello (GB/T 38636): chains tell it apart with
		// transport_protocol "tlcp", so one port serves TLS and TLCP.
		info.TransportProtocol = "tlcp"
	}
	info.ServerName = h.ServerName
	if h.ServerName != "" {
		in.sniFound.Inc()
	} else {
		in.sniNotFound.Inc()
	}
	info.ApplicationProtocols = h.ALPN
	if len(h.ALPN) > 0 {
		in.alpnFound.Inc()
	} else {
		in.alpnNotFound.Inc()
	}
	return true, nil
}
