// Package headerecho is a complete small stream filter, the worked
// example of docs/adding-a-filter.md: it copies request headers into the
// response, so a client sees what the proxy received (a request ID it
// did not send, a header a filter before it added).
//
//	http_filters:
//	- name: strait.examples.header_echo
//	  typed_config:
//	    "@type": type.googleapis.com/xds.type.v3.TypedStruct
//	    type_url: type.googleapis.com/strait.examples.HeaderEcho
//	    value: { headers: [x-request-id], prefix: "x-echo-" }
//
// A route may name other headers (typed_per_filter_config with the same
// type) or disable it (envoy.config.route.v3.FilterConfig, disabled).
package headerecho

import (
	"errors"
	"fmt"
	"strings"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Name and TypeURL name the filter and its config.
const (
	Name    = "strait.examples.header_echo"
	TypeURL = "type.googleapis.com/strait.examples.HeaderEcho"
)

// 1. Register the filter and its per-route config by name and type URL.
func init() {
	filter.RegisterHTTPStruct(Name, TypeURL, func(_ *filter.BuildContext, m proto.Message) (filter.HTTPFactory, error) {
		c, err := build(m.(*structpb.Struct))
		if err != nil {
			return nil, err
		}
		return &factory{c}, nil
	})
	filter.RegisterHTTPPerRouteStruct(Name, TypeURL+"PerRoute", func(m proto.Message) (any, error) {
		return build(m.(*structpb.Struct))
	})
}

// 2. Decode the config strictly, check it, and build what every stream
// shares: here, the lowercase header names and the response names.
type settings struct {
	Headers []string `json:"headers"`
	Prefix  string   `json:"prefix"`
}

type echo struct {
	from, to []string
}

func build(m *structpb.Struct) (*echo, error) {
	var s settings
	if err := config.DecodeStruct(m, &s); err != nil {
		return nil, err
	}
	if len(s.Headers) == 0 {
		return nil, config.At("headers", errors.New("at least one header"))
	}
	if s.Prefix == "" {
		s.Prefix = "x-echo-"
	}
	if !protocol.IsToken(s.Prefix) {
		return nil, config.At("prefix", fmt.Errorf("%q is not a header name", s.Prefix))
	}
	e := &echo{}
	for i, h := range s.Headers {
		h = strings.ToLower(h)
		if !protocol.IsToken(h) || strings.HasPrefix(h, ":") {
			return nil, config.At(fmt.Sprintf("headers[%d]", i), fmt.Errorf("%q is not a header name", h))
		}
		e.from = append(e.from, h)
		e.to = append(e.to, strings.ToLower(s.Prefix)+h)
	}
	return e, nil
}

// 3. The factory makes one filter per stream.
type factory struct{ e *echo }

func (f *factory) New() filter.StreamFilter { return &stream{e: f.e} }

// 4. The per-stream filter: it implements the phases it needs, here
// DecodeHeaders (keep the values) and EncodeHeaders (set them).
type stream struct {
	e      *echo
	values []string
}

// DecodeHeaders copies the values out: header slices are not kept past
// the call.
func (f *stream) DecodeHeaders(cb filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	if pr, ok := cb.PerRoute().(*echo); ok {
		f.e = pr // the route's own list
	}
	f.values = make([]string, len(f.e.from))
	for i, name := range f.e.from {
		if v, ok := h.Get(name); ok {
			f.values[i] = string(v)
		}
	}
	return filter.Continue
}

// EncodeHeaders sets the echoes on the response (an upstream's or a
// local reply made after this filter ran).
func (f *stream) EncodeHeaders(_ filter.Callbacks, h *protocol.Headers, _ bool) filter.Status {
	for i, v := range f.values {
		if v != "" {
			h.Set(f.e.to[i], v)
		}
	}
	return filter.Continue
}
