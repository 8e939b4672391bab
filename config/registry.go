package config

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Kind is an extension category; a type URL is looked up within its kind.
type Kind string

// The extension kinds.
const (
	NetworkFilter  Kind = "network filter"
	HTTPFilter     Kind = "http filter"
	ListenerFilter Kind = "listener filter"
	Protocol       Kind = "protocol"
	LoadBalancer   Kind = "load balancer"
	// DownstreamTransport is a transport socket for accepted connections
	// (a filter chain's transport_socket).
	DownstreamTransport Kind = "downstream transport socket"
	// UpstreamTransport is a transport socket for upstream connections (a
	// cluster's transport_socket).
	UpstreamTransport Kind = "upstream transport socket"
	// HTTPPerRoute is the per-route config type of an HTTP filter
	// (typed_per_filter_config), registered under the filter's name.
	HTTPPerRoute Kind = "http filter per-route config"
	// AccessLogger is an access log sink (an access_log entry's
	// typed_config).
	AccessLogger Kind = "access logger"
	// UpstreamNetworkFilter is a filter on a cluster's connections (a
	// cluster's filters).
	UpstreamNetworkFilter Kind = "upstream network filter"
	// Tracer is a connection manager's tracing.provider.
	Tracer Kind = "tracer"
)

// Extension is one registered extension: its canonical name
// ("envoy.filters.network.tcp_proxy"), the type URL of its typed_config and
// its factory, whose type the kind's package defines.
type Extension struct {
	Kind    Kind
	Name    string
	TypeURL string
	Factory any
}

var (
	regMu  sync.RWMutex
	byURL  = map[Kind]map[string]*Extension{}
	byName = map[Kind]map[string]*Extension{}
)

// Register adds an extension. It panics on an empty name or type URL, or on
// a name or type URL already registered for the kind: both are programming
// errors found at start-up.
func Register(e Extension) {
	if e.Name == "" || e.Kind == "" {
		panic("config: Register with empty name or kind")
	}
	regMu.Lock()
	defer regMu.Unlock()
	if byURL[e.Kind] == nil {
		byURL[e.Kind] = map[string]*Extension{}
		byName[e.Kind] = map[string]*Extension{}
	}
	if _, dup := byName[e.Kind][e.Name]; dup {
		panic(fmt.Sprintf("config: %s %q registered twice", e.Kind, e.Name))
	}
	if e.TypeURL != "" {
		if _, dup := byURL[e.Kind][e.TypeURL]; dup {
			panic(fmt.Sprintf("config: %s type URL %q registered twice", e.Kind, e.TypeURL))
		}
		byURL[e.Kind][e.TypeURL] = &e
	}
	byName[e.Kind][e.Name] = &e
}

// ByTypeURL finds an extension of kind by the type URL of its config.
func ByTypeURL(k Kind, url string) (*Extension, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	e, ok := byURL[k][url]
	return e, ok
}

// ByName finds an extension of kind by name.
func ByName(k Kind, name string) (*Extension, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	e, ok := byName[k][name]
	return e, ok
}

// TypeURLs lists the type URLs registered for kind, sorted.
func TypeURLs(k Kind) []string {
	regMu.RLock()
	defer regMu.RUnlock()
	var out []string
	for u := range byURL[k] {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// UnsupportedTypeError reports a typed_config whose type no extension of the
// kind builds.
type UnsupportedTypeError struct {
	Kind    Kind
	TypeURL string
}

func (e *UnsupportedTypeError) Error() string {
	return fmt.Sprintf("unsupported %s type %q (supported: %s)", e.Kind, e.TypeURL, strings.Join(TypeURLs(e.Kind), ", "))
}

// Lookup is ByTypeURL returning an *UnsupportedTypeError when absent.
func Lookup(k Kind, url string) (*Extension, error) {
	if e, ok := ByTypeURL(k, url); ok {
		return e, nil
	}
	return nil, &UnsupportedTypeError{Kind: k, TypeURL: url}
}

// Decode looks typed up among kind k's extensions, unpacks it and runs
// its generated validation; errors are under "typed_config".
func Decode(k Kind, typed *anypb.Any) (*Extension, proto.Message, error) {
	if typed == nil {
		return nil, nil, At("typed_config", fmt.Errorf("required"))
	}
	ext, msg, err := DecodeValue(k, typed)
	return ext, msg, At("typed_config", err)
}

// DecodeValue is Decode with errors at the value's own path. A
// TypedStruct is resolved by its inner type URL (typedstruct.go). An
// unknown type is an *UnsupportedTypeError.
func DecodeValue(k Kind, typed *anypb.Any) (*Extension, proto.Message, error) {
	if IsTypedStruct(typed) {
		return decodeTypedStruct(k, typed)
	}
	ext, err := Lookup(k, typed.GetTypeUrl())
	if err != nil {
		return nil, nil, err
	}
	msg, err := typed.UnmarshalNew()
	if err != nil {
		return nil, nil, err
	}
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		if errs := ValidationErrors(v.ValidateAll()); len(errs) > 0 {
			return nil, nil, Join(errs)
		}
	}
	return ext, msg, nil
}
