// Package httpinspector is envoy.filters.listener.http_inspector: it
// reads the start of a plaintext connection without consuming it and
// records the HTTP version it finds as an application protocol
// ("http/1.1", "http/1.0", or "h2c" for the HTTP/2 preface), for
// filter_chain_match.application_protocols. A connection that
// tls_inspector found to be TLS is left alone.
package httpinspector

import (
	"bytes"

	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
)

// Name is the filter's name.
const Name = "envoy.filters.listener.http_inspector"

// maxInspect bounds the request line it waits for (Envoy's 8 KiB).
const maxInspect = 8 << 10

func init() {
	filter.RegisterListener(Name, &httpinspectorv3.HttpInspector{}, build)
}

var supported = config.NewSupport(map[string]string{
	"envoy.extensions.filters.listener.http_inspector.v3.HttpInspector": ``,
})

type inspector struct {
	http10, http11, http2, other *stats.Counter
}

func build(bc *filter.BuildContext, m proto.Message) (filter.ListenerFilter, error) {
	if err := supported.Check(m); err != nil {
		return nil, err
	}
	sc := bc.Stats.Scope("http_inspector", "", "")
	return &inspector{http10: sc.Counter("http10_found"), http11: sc.Counter("http11_found"),
		http2: sc.Counter("http2_found"), other: sc.Counter("http_not_found")}, nil
}

var preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Inspect implements filter.ListenerFilter.
func (in *inspector) Inspect(data []byte, info *network.ConnInfo) (bool, error) {
	if info.TransportProtocol != "" && info.TransportProtocol != "raw_buffer" {
		return true, nil
	}
	n := min(len(data), len(preface))
	if bytes.Equal(data[:n], preface[:n]) {
		if n < len(preface) {
			return false, nil
		}
		in.http2.Inc()
		info.ApplicationProtocols = []string{"h2c"}
		return true, nil
	}
	proto, done := requestLine(data)
	switch {
	case !done:
		return false, nil
	case proto == "":
		in.other.Inc()
	case proto == "http/1.0":
		in.http10.Inc()
		info.ApplicationProtocols = []string{proto}
	default:
		in.http11.Inc()
		info.ApplicationProtocols = []string{proto}
	}
	return true, nil
}

// requestLine reads "METHOD SP target SP HTTP/1.x CRLF" and returns
// "http/1.1" or "http/1.0", "" when the bytes cannot be one, and
// done=false while the line may still come.
func requestLine(data []byte) (proto string, done bool) {
	i := 0
	for i < len(data) && isToken(data[i]) {
		i++
	}
	if i == len(data) {
		return "", len(data) >= maxInspect
	}
	if i == 0 || data[i] != ' ' {
		return "", true
	}
	end := bytes.IndexByte(data, '\n')
	if end < 0 {
		if len(data) >= maxInspect {
			return "", true
		}
		return "", false
	}
	line := bytes.TrimSuffix(data[i+1:end], []byte("\r"))
	sp := bytes.LastIndexByte(line, ' ')
	if sp <= 0 {
		return "", true
	}
	switch string(line[sp+1:]) {
	case "HTTP/1.1":
		return "http/1.1", true
	case "HTTP/1.0":
		return "http/1.0", true
	}
	return "", true
}

func isToken(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}
