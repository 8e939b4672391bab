package router

import (
	"errors"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/protocol"
)

// KeyBuilder computes a request's scope key (scoped_routes'
// scope_key_builder): one fragment per header_value_extractor, each the
// whole header value, its index-th element, or the value of the element
// whose key matches, elements split by element_separator.
type KeyBuilder struct {
	frags []fragment
}

type fragment struct {
	header  string
	sep     string // element_separator ("": the whole value is one element)
	index   int
	byKey   bool
	key     string // element.key
	kvSep   string // element.separator
	hasElem bool
}

// CompileKeyBuilder compiles a scope_key_builder; errors name the field.
func CompileKeyBuilder(b *hcmv3.ScopedRoutes_ScopeKeyBuilder) (*KeyBuilder, error) {
	kb := &KeyBuilder{}
	for i, f := range b.GetFragments() {
		path := fmt.Sprintf("fragments[%d]", i)
		hv := f.GetHeaderValueExtractor()
		if hv == nil {
			return nil, config.At(path, errors.New("a header_value_extractor is required"))
		}
		fr := fragment{header: strings.ToLower(hv.GetName()), sep: hv.GetElementSeparator()}
		switch e := hv.GetExtractType().(type) {
		case *hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Index:
			fr.index = int(e.Index)
			if fr.sep == "" && fr.index != 0 {
				return nil, config.At(path+".header_value_extractor.index", errors.New("must be 0 without an element_separator"))
			}
		case *hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Element:
			fr.byKey, fr.key, fr.kvSep = true, e.Element.GetKey(), e.Element.GetSeparator()
		default:
			return nil, config.At(path+".header_value_extractor", errors.New("give index or element"))
		}
		kb.frags = append(kb.frags, fr)
	}
	if len(kb.frags) == 0 {
		return nil, config.At("fragments", errors.New("at least one fragment is required"))
	}
	return kb, nil
}

// Key returns the request's scope key; false when a fragment is missing
// (no such header or element): the request is in no scope.
func (kb *KeyBuilder) Key(h *protocol.Headers) (string, bool) {
	var b strings.Builder
	for i := range kb.frags {
		v, ok := kb.frags[i].extract(h)
		if !ok {
			return "", false
		}
		b.WriteString(v)
		b.WriteByte(0)
	}
	return b.String(), true
}

func (f *fragment) extract(h *protocol.Headers) (string, bool) {
	raw, ok := h.Get(f.header)
	if !ok {
		return "", false
	}
	v := string(raw)
	if f.sep == "" {
		if f.byKey {
			return elementValue(v, f.key, f.kvSep)
		}
		return v, true
	}
	elems := strings.Split(v, f.sep)
	if !f.byKey {
		if f.index >= len(elems) {
			return "", false
		}
		return elems[f.index], true
	}
	for _, e := range elems {
		if val, ok := elementValue(e, f.key, f.kvSep); ok {
			return val, true
		}
	}
	return "", false
}

// elementValue reads "key<sep>value" (surrounding spaces trimmed) for key.
func elementValue(e, key, sep string) (string, bool) {
	k, val, ok := strings.Cut(strings.TrimSpace(e), sep)
	if !ok || k != key {
		return "", false
	}
	return val, true
}

// ScopeKey is a ScopedRouteConfiguration's key, comparable with Key.
func ScopeKey(sc *routev3.ScopedRouteConfiguration) string {
	var b strings.Builder
	for _, f := range sc.GetKey().GetFragments() {
		b.WriteString(f.GetStringKey())
		b.WriteByte(0)
	}
	return b.String()
}

// Scopes is a compiled scoped_routes: the key builder and each scope's
// route table. It is immutable; a change builds a new one.
type Scopes struct {
	kb     *KeyBuilder
	tables map[string]*Table
}

// NewScopes makes the scope map; tables are by ScopeKey.
func NewScopes(kb *KeyBuilder, tables map[string]*Table) *Scopes {
	return &Scopes{kb: kb, tables: tables}
}

// Table returns the route table of the request's scope, nil when the
// request is in no scope or its scope has no routes yet (404).
func (s *Scopes) Table(h *protocol.Headers) *Table {
	k, ok := s.kb.Key(h)
	if !ok {
		return nil
	}
	return s.tables[k]
}
