package protocol

import (
	"bytes"
	"sync"
)

// Pseudo-header names. Every codec presents a request and a response the
// same way an HTTP/2 codec would: the request line and the status line are
// pseudo-header fields at the front of Headers.
const (
	Method    = ":method"
	Path      = ":path"
	Authority = ":authority"
	Scheme    = ":scheme"
	Status    = ":status"
	Protocol  = ":protocol"
	// RPCMethod and RPCTimeout are set by framed-RPC codecs
	// (protocol/rpc): the called method, and the caller's timeout in
	// milliseconds when it sent one. RPCOneWay ("1") marks a call that
	// gets no answer; RPCException ("1") a reply that carries the
	// provider's application exception (a normal answer on the wire).
	RPCMethod    = ":rpc-method"
	RPCTimeout   = ":rpc-timeout"
	RPCOneWay    = ":rpc-oneway"
	RPCException = ":rpc-exception"
)

// Headers is an ordered multimap of header fields, stored in one byte slice
// so that a Headers value can be reset and reused without allocating.
// Field names are stored lowercased (as Envoy and HTTP/2 do); values are kept
// as received. The zero value is empty and ready to use.
//
// Slices returned by Get, Field and Visit are valid until the next call that
// changes h (Add, Set, Del, Reset, CopyFrom); callers that keep them copy.
type Headers struct {
	buf    []byte
	fields []field
	// bp and fp are the pooled holders of buf and fields, when they came
	// from the pools (Recycle).
	bp *[]byte
	fp *[]field
}

var (
	bufPool   = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}
	fieldPool = sync.Pool{New: func() any { f := make([]field, 0, 16); return &f }}
)

// maxPooled bounds what Recycle keeps: a huge header block is dropped.
const maxPooled = 16 << 10

// Recycle empties h and gives its storage to pools shared by every
// Headers; the next Add takes storage from them. Long-lived owners that
// sit idle (a keep-alive connection between requests) call it so that
// they hold no header storage. Slices from h are invalid afterwards.
func (h *Headers) Recycle() {
	if h.buf != nil && cap(h.buf) <= maxPooled {
		if h.bp == nil {
			b := h.buf
			h.bp = &b
		}
		*h.bp = h.buf[:0]
		bufPool.Put(h.bp)
	}
	if h.fields != nil && cap(h.fields) <= 1024 {
		if h.fp == nil {
			f := h.fields
			h.fp = &f
		}
		*h.fp = h.fields[:0]
		fieldPool.Put(h.fp)
	}
	*h = Headers{}
}

// grow takes pooled storage for an empty Headers.
func (h *Headers) grow() {
	if h.buf == nil {
		h.bp = bufPool.Get().(*[]byte)
		h.buf = (*h.bp)[:0]
	}
	if h.fields == nil {
		h.fp = fieldPool.Get().(*[]field)
		h.fields = (*h.fp)[:0]
	}
}

type field struct {
	ns, ne, vs, ve int32
	dead           bool
}

// Reset empties h, keeping its storage for reuse.
func (h *Headers) Reset() {
	h.buf = h.buf[:0]
	h.fields = h.fields[:0]
}

// Len reports the number of live fields, pseudo-headers included.
func (h *Headers) Len() int {
	n := 0
	for i := range h.fields {
		if !h.fields[i].dead {
			n++
		}
	}
	return n
}

// Size reports the bytes held by names and values of live fields, the figure
// that header size limits are checked against.
func (h *Headers) Size() int {
	n := 0
	for i := range h.fields {
		f := &h.fields[i]
		if !f.dead {
			n += int(f.ne-f.ns) + int(f.ve-f.vs)
		}
	}
	return n
}

// Add appends a field. The name is lowercased as it is stored; h does not
// retain name or value.
func (h *Headers) Add(name, value []byte) { add(h, name, value) }

// AddString is Add for strings.
func (h *Headers) AddString(name, value string) { add(h, name, value) }

func add[N, V string | []byte](h *Headers, name N, value V) {
	if h.fields == nil {
		h.grow()
	}
	var f field
	f.ns = int32(len(h.buf))
	h.buf = append(h.buf, name...)
	f.ne = int32(len(h.buf))
	lower(h.buf[f.ns:f.ne])
	h.buf = append(h.buf, value...)
	f.vs, f.ve = f.ne, int32(len(h.buf))
	h.fields = append(h.fields, f)
}

// lower lowercases ASCII letters in place.
func lower(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}

// Set replaces every field named name with one field holding value. A
// pseudo-header that is set keeps its place in front of the regular fields.
func (h *Headers) Set(name, value string) { set(h, name, value) }

// SetBytes is Set with a byte-slice value.
func (h *Headers) SetBytes(name string, value []byte) { set(h, name, value) }

func set[T string | []byte](h *Headers, name string, value T) {
	for i := range h.fields {
		f := &h.fields[i]
		if !f.dead && h.nameIs(f, name) {
			setValue(h, i, value)
			h.delFrom(name, i+1)
			return
		}
	}
	add(h, name, value)
	if len(name) > 0 && name[0] == ':' {
		h.movePseudo()
	}
}

// SetJoin is Set with the value made of parts laid end to end; h does not
// retain them.
func (h *Headers) SetJoin(name string, parts ...[]byte) {
	h.Del(name)
	if h.fields == nil {
		h.grow()
	}
	var f field
	f.ns = int32(len(h.buf))
	h.buf = append(h.buf, name...)
	f.ne = int32(len(h.buf))
	lower(h.buf[f.ns:f.ne])
	for _, p := range parts {
		h.buf = append(h.buf, p...)
	}
	f.vs, f.ve = f.ne, int32(len(h.buf))
	h.fields = append(h.fields, f)
	if len(name) > 0 && name[0] == ':' {
		h.movePseudo()
	}
}

// movePseudo moves the last field, a pseudo-header, in front of the
// regular fields.
func (h *Headers) movePseudo() {
	last := h.fields[len(h.fields)-1]
	pos := 0
	for pos < len(h.fields)-1 {
		f := &h.fields[pos]
		if f.dead || (f.ne > f.ns && h.buf[f.ns] == ':') {
			pos++
			continue
		}
		break
	}
	copy(h.fields[pos+1:], h.fields[pos:len(h.fields)-1])
	h.fields[pos] = last
}

func setValue[T string | []byte](h *Headers, i int, value T) {
	f := &h.fields[i]
	if len(value) <= int(f.ve-f.vs) {
		n := copy(h.buf[f.vs:], value)
		f.ve = f.vs + int32(n)
		return
	}
	f.vs = int32(len(h.buf))
	h.buf = append(h.buf, value...)
	f.ve = int32(len(h.buf))
}

// Get returns the value of the first field named name (lowercase) and
// whether there was one.
func (h *Headers) Get(name string) ([]byte, bool) {
	for i := range h.fields {
		f := &h.fields[i]
		if !f.dead && h.nameIs(f, name) {
			return h.buf[f.vs:f.ve], true
		}
	}
	return nil, false
}

// GetString is Get returning a string copy ("" when absent).
func (h *Headers) GetString(name string) string {
	v, _ := h.Get(name)
	return string(v)
}

// Has reports whether a field named name (lowercase) is present.
func (h *Headers) Has(name string) bool {
	_, ok := h.Get(name)
	return ok
}

// Count reports how many fields are named name (lowercase).
func (h *Headers) Count(name string) int {
	n := 0
	for i := range h.fields {
		f := &h.fields[i]
		if !f.dead && h.nameIs(f, name) {
			n++
		}
	}
	return n
}

// Del removes every field named name (lowercase) and reports how many.
func (h *Headers) Del(name string) int { return h.delFrom(name, 0) }

func (h *Headers) delFrom(name string, from int) int {
	n := 0
	for i := from; i < len(h.fields); i++ {
		f := &h.fields[i]
		if !f.dead && h.nameIs(f, name) {
			f.dead = true
			n++
		}
	}
	return n
}

// Visit calls fn for each live field in order until fn returns false.
func (h *Headers) Visit(fn func(name, value []byte) bool) {
	for i := range h.fields {
		f := &h.fields[i]
		if f.dead {
			continue
		}
		if !fn(h.buf[f.ns:f.ne], h.buf[f.vs:f.ve]) {
			return
		}
	}
}

// NumSlots is the bound for Slot: live and deleted fields alike. Iterating
// with Slot avoids the closure that Visit needs.
func (h *Headers) NumSlots() int { return len(h.fields) }

// Slot returns the field in slot i and ok=false when that field was deleted.
func (h *Headers) Slot(i int) (name, value []byte, ok bool) {
	f := &h.fields[i]
	if f.dead {
		return nil, nil, false
	}
	return h.buf[f.ns:f.ne], h.buf[f.vs:f.ve], true
}

// DelSlot removes the field in slot i.
func (h *Headers) DelSlot(i int) { h.fields[i].dead = true }

// CopyFrom makes h a copy of o, reusing h's storage.
func (h *Headers) CopyFrom(o *Headers) {
	if h.fields == nil {
		h.grow()
	}
	h.buf = append(h.buf[:0], o.buf...)
	h.fields = append(h.fields[:0], o.fields...)
}

// Method returns the :method pseudo-header.
func (h *Headers) Method() []byte { v, _ := h.Get(Method); return v }

// Path returns the :path pseudo-header.
func (h *Headers) Path() []byte { v, _ := h.Get(Path); return v }

// Host returns :authority.
func (h *Headers) Host() []byte { v, _ := h.Get(Authority); return v }

// StatusCode parses :status; 0 when absent or malformed.
func (h *Headers) StatusCode() int {
	v, _ := h.Get(Status)
	if len(v) != 3 {
		return 0
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// HasToken reports whether any field named name holds token in its
// comma-separated list, compared case-insensitively (RFC 9110 §5.6.1).
func (h *Headers) HasToken(name, token string) bool {
	for i := range h.fields {
		f := &h.fields[i]
		if f.dead || !h.nameIs(f, name) {
			continue
		}
		if ListHasToken(h.buf[f.vs:f.ve], token) {
			return true
		}
	}
	return false
}

// ListHasToken reports whether the comma-separated list v holds token,
// compared case-insensitively, ignoring optional whitespace.
func ListHasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var item []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			item, v = v, nil
		}
		item = TrimOWS(item)
		if EqualFold(item, token) {
			return true
		}
	}
	return false
}

// TrimOWS trims spaces and tabs from both ends of v.
func TrimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// EqualFold reports whether b equals s ignoring ASCII case.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func (h *Headers) nameIs(f *field, name string) bool {
	return int(f.ne-f.ns) == len(name) && string(h.buf[f.ns:f.ne]) == name
}
