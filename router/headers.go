package router

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/straitproxy/strait/protocol"
)

// Vars are the per-request values that header-value command operators read.
type Vars struct {
	RemoteAddr string // downstream peer, "ip:port" ("[v6]:port" for IPv6)
	LocalAddr  string // address the downstream connection arrived on
	Protocol   string // "HTTP/1.1", "HTTP/2", ...
}

// appendAction is HeaderValueOption.append_action.
type appendAction uint8

const (
	appendOrAdd appendAction = iota
	addIfAbsent
	overwriteOrAdd
	overwriteIfExists
)

// headerAdd is one compiled HeaderValueOption.
type headerAdd struct {
	name      string
	nameBytes []byte
	value     format
	action    appendAction
	keepEmpty bool
}

// headerOps is the add and remove lists of one level for one direction.
type headerOps struct {
	remove []string
	add    []headerAdd
}

// mutation is one level's header mutation: route, virtual host or route
// configuration.
type mutation struct {
	req, resp headerOps
}

func (m *mutation) empty() bool {
	return m == nil || (len(m.req.add)+len(m.req.remove)+len(m.resp.add)+len(m.resp.remove) == 0)
}

// headerLists is the four header fields shared by the three levels.
type headerLists struct {
	reqAdd, respAdd       []*corev3.HeaderValueOption
	reqRemove, respRemove []string
}

func compileMutation(l headerLists, path string) (*mutation, error) {
	m := &mutation{}
	var err error
	if m.req.add, err = compileAdds(l.reqAdd, joinPath(path, "request_headers_to_add"), true); err != nil {
		return nil, err
	}
	if m.resp.add, err = compileAdds(l.respAdd, joinPath(path, "response_headers_to_add"), false); err != nil {
		return nil, err
	}
	if m.req.remove, err = compileRemoves(l.reqRemove, joinPath(path, "request_headers_to_remove")); err != nil {
		return nil, err
	}
	if m.resp.remove, err = compileRemoves(l.respRemove, joinPath(path, "response_headers_to_remove")); err != nil {
		return nil, err
	}
	if m.empty() {
		return nil, nil
	}
	return m, nil
}

func compileAdds(opts []*corev3.HeaderValueOption, path string, request bool) ([]headerAdd, error) {
	var out []headerAdd
	for i, o := range opts {
		a, err := compileAdd(o, fmt.Sprintf("%s[%d]", path, i), request)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func compileAdd(o *corev3.HeaderValueOption, path string, request bool) (headerAdd, error) {
	hv := o.GetHeader()
	name := strings.ToLower(hv.GetKey())
	if err := checkMutable(name, request && name == protocol.Authority); err != nil {
		return headerAdd{}, fmt.Errorf("%s.header.key: %w", path, err)
	}
	raw := hv.GetValue()
	if len(hv.GetRawValue()) > 0 {
		if raw != "" {
			return headerAdd{}, fmt.Errorf("%s.header: only one of value and raw_value may be set", path)
		}
		raw = string(hv.GetRawValue())
	}
	f, err := parseFormat(raw)
	if err != nil {
		return headerAdd{}, fmt.Errorf("%s.header.value: %w", path, err)
	}
	act, err := appendActionOf(o)
	if err != nil {
		return headerAdd{}, fmt.Errorf("%s: %w", path, err)
	}
	if name == protocol.Authority && act == appendOrAdd {
		// A second :authority makes no sense; appending means replacing.
		act = overwriteOrAdd
	}
	return headerAdd{name: name, nameBytes: []byte(name), value: f, action: act, keepEmpty: o.GetKeepEmptyValue()}, nil
}

// appendActionOf resolves append_action and the deprecated append flag,
// which Envoy refuses to see together.
func appendActionOf(o *corev3.HeaderValueOption) (appendAction, error) {
	act := appendAction(o.GetAppendAction())
	if o.GetAppend() == nil {
		return act, nil
	}
	if act != appendOrAdd {
		return 0, fmt.Errorf("append and append_action may not both be set")
	}
	if !o.GetAppend().GetValue() {
		return overwriteOrAdd, nil
	}
	return appendOrAdd, nil
}

func compileRemoves(names []string, path string) ([]string, error) {
	var out []string
	for i, n := range names {
		n = strings.ToLower(n)
		if err := checkMutable(n, false); err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", path, i, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// checkMutable refuses pseudo-headers and "host" (Envoy's
// isModifiableHeader); :authority is allowed only where allowAuthority says.
func checkMutable(name string, allowAuthority bool) error {
	switch {
	case name == "host":
		return fmt.Errorf("header %q may not be modified (use :authority)", name)
	case strings.HasPrefix(name, ":") && !allowAuthority:
		return fmt.Errorf("pseudo-header %q may not be modified", name)
	}
	return nil
}

// pending is one add decided against the headers as they were before the
// level's adds; Envoy decides them all first, then overwrites, then adds.
type pending struct {
	add        *headerAdd
	start, end int // the value in the scratch buffer, for dynamic values
	overwrite  bool
}

// apply runs one level on h: removals first, then overwrites, then adds.
// src is what %REQ()% reads (h itself for requests).
func (ops *headerOps) apply(h, src *protocol.Headers, v *Vars) {
	for _, name := range ops.remove {
		h.Del(name)
	}
	if len(ops.add) == 0 {
		return
	}
	var stack [8]pending
	todo := stack[:0]
	var scratch []byte
	for i := range ops.add {
		a := &ops.add[i]
		p := pending{add: a}
		n := len(a.value.literal)
		if a.value.dynamic() {
			p.start = len(scratch)
			scratch = a.value.appendTo(scratch, src, v)
			p.end = len(scratch)
			n = p.end - p.start
		}
		if n == 0 && !a.keepEmpty {
			continue
		}
		if ok, overwrite := decide(a, h); ok {
			p.overwrite = overwrite
			todo = append(todo, p)
		}
	}
	for pass := range 2 {
		for i := range todo {
			p := &todo[i]
			if p.overwrite != (pass == 0) {
				continue
			}
			val := p.add.value.literal
			if p.add.value.dynamic() {
				val = scratch[p.start:p.end]
			}
			write(h, p.add, val, p.overwrite)
		}
	}
}

// decide reports whether a applies to h and whether it overwrites.
func decide(a *headerAdd, h *protocol.Headers) (apply, overwrite bool) {
	switch a.action {
	case addIfAbsent:
		return !h.Has(a.name), false
	case overwriteIfExists:
		return h.Has(a.name), true
	case overwriteOrAdd:
		return true, true
	}
	return true, false
}

func write(h *protocol.Headers, a *headerAdd, val []byte, overwrite bool) {
	if overwrite || a.name[0] == ':' {
		h.SetBytes(a.name, val)
		return
	}
	h.Add(a.nameBytes, val)
}

// levels is the order in which a route's mutations run.
type levels [3]*mutation

func (ls *levels) applyRequest(h *protocol.Headers, v *Vars) {
	for _, m := range ls {
		if m != nil {
			m.req.apply(h, h, v)
		}
	}
}

func (ls *levels) applyResponse(resp, req *protocol.Headers, v *Vars) {
	for _, m := range ls {
		if m != nil {
			m.resp.apply(resp, req, v)
		}
	}
}

// ApplyRequestHeaders applies request_headers_to_remove and
// request_headers_to_add of the route, its virtual host and the route
// configuration to h, in that order (the reverse when
// most_specific_header_mutations_wins is set). Each level removes before it
// adds. v may be nil when no value uses a command operator that reads it.
func (r *Route) ApplyRequestHeaders(h *protocol.Headers, v *Vars) {
	r.headerLevels.applyRequest(h, v)
}

// ApplyResponseHeaders is ApplyRequestHeaders for the response headers;
// %REQ()% reads req.
func (r *Route) ApplyResponseHeaders(resp *protocol.Headers, req *protocol.Headers, v *Vars) {
	r.headerLevels.applyResponse(resp, req, v)
}

// ApplyRequestHeaders applies only this virtual host's own request header
// mutation. Route.ApplyRequestHeaders already includes it; this is for
// replies made without a route.
func (vh *VirtualHost) ApplyRequestHeaders(h *protocol.Headers, v *Vars) {
	if vh.headers != nil {
		vh.headers.req.apply(h, h, v)
	}
}

// ApplyResponseHeaders applies only this virtual host's own response header
// mutation (see ApplyRequestHeaders).
func (vh *VirtualHost) ApplyResponseHeaders(resp *protocol.Headers, req *protocol.Headers, v *Vars) {
	if vh.headers != nil {
		vh.headers.resp.apply(resp, req, v)
	}
}
