package router

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/straitproxy/strait/protocol"
)

// Redirect is a compiled redirect action. It is shared by all streams and
// must not be modified.
type Redirect struct {
	// Status is 301 unless response_code asks for 302, 303, 307 or 308.
	Status int

	scheme     string // "" keeps the request's scheme
	host       string // "" keeps the request's host
	port       string // ":8080", or "" to keep (or drop) the request's
	path       string // path_redirect
	pathQuery  bool   // path_redirect has its own query
	rewrite    pathRewrite
	stripQuery bool
	// sslRedirect: a virtual host's require_tls redirect, "https://"
	// then the request's host and path as they are (Envoy's).
	sslRedirect bool
}

var redirectStatus = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  301,
	routev3.RedirectAction_FOUND:              302,
	routev3.RedirectAction_SEE_OTHER:          303,
	routev3.RedirectAction_TEMPORARY_REDIRECT: 307,
	routev3.RedirectAction_PERMANENT_REDIRECT: 308,
}

func compileRedirect(cfg *routev3.RedirectAction, m *routeMatch, path string) (*Redirect, error) {
	status, ok := redirectStatus[cfg.GetResponseCode()]
	if !ok {
		return nil, fmt.Errorf("%s.response_code: unknown value %d", path, cfg.GetResponseCode())
	}
	r := &Redirect{Status: status, host: cfg.GetHostRedirect(), stripQuery: cfg.GetStripQuery()}
	if cfg.GetHttpsRedirect() {
		r.scheme = "https"
	}
	if s := cfg.GetSchemeRedirect(); s != "" {
		r.scheme = strings.ToLower(s)
	}
	if p := cfg.GetPortRedirect(); p != 0 {
		r.port = ":" + strconv.FormatUint(uint64(p), 10)
	}
	var err error
	switch s := cfg.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		r.path, r.pathQuery = s.PathRedirect, strings.Contains(s.PathRedirect, "?")
	case *routev3.RedirectAction_PrefixRewrite:
		r.rewrite, err = compileRewrite(s.PrefixRewrite, nil, m, path)
	case *routev3.RedirectAction_RegexRewrite:
		r.rewrite, err = compileRewrite("", s.RegexRewrite, m, path)
	}
	return r, err
}

// Location returns the Location header for a request, following Envoy:
//   - scheme: scheme_redirect, "https" for https_redirect, else :scheme;
//   - host: host_redirect, else :authority, whose port is dropped when
//     port_redirect is set or when the scheme changes away from the default
//     port of the request's scheme (x-forwarded-proto, else :scheme);
//   - path: path_redirect (keeping the request's query unless it has its own
//     or strip_query), else the request path after prefix_rewrite or
//     regex_rewrite; strip_query drops the query, except one written in
//     path_redirect.
func (r *Redirect) Location(h *protocol.Headers) string {
	if r.sslRedirect {
		return "https://" + string(h.Host()) + string(h.Path())
	}
	reqScheme, _ := h.Get(protocol.Scheme)
	scheme := r.scheme
	if scheme == "" {
		scheme = strings.ToLower(string(reqScheme))
		if scheme == "" {
			scheme = "http"
		}
	}
	host := r.hostFor(h, scheme, reqScheme)
	path := r.newPath(h.Path())
	var b strings.Builder
	b.Grow(len(scheme) + 3 + len(host) + len(r.port) + len(path) + 1)
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(host)
	b.WriteString(r.port)
	if len(path) == 0 || path[0] != '/' {
		b.WriteByte('/')
	}
	b.Write(path)
	return b.String()
}

func (r *Redirect) hostFor(h *protocol.Headers, scheme string, reqScheme []byte) string {
	if r.host != "" {
		if i := portStart([]byte(r.host)); i >= 0 && r.port != "" {
			return r.host[:i]
		}
		return r.host
	}
	auth := h.Host()
	i := portStart(auth)
	if i < 0 {
		return string(auth)
	}
	if r.port != "" {
		return string(auth[:i])
	}
	fwd, ok := h.Get("x-forwarded-proto")
	if !ok {
		fwd = reqScheme
	}
	port := string(auth[i:])
	if !protocol.EqualFold(fwd, scheme) &&
		((protocol.EqualFold(fwd, "https") && port == ":443") || (protocol.EqualFold(fwd, "http") && port == ":80")) {
		return string(auth[:i])
	}
	return string(auth)
}

func (r *Redirect) newPath(reqPath []byte) []byte {
	if r.path != "" {
		p := []byte(r.path)
		if r.pathQuery || r.stripQuery {
			return p
		}
		if q := bytes.IndexByte(reqPath, '?'); q >= 0 {
			p = append(p, reqPath[q:]...)
		}
		return p
	}
	p := r.rewrite.appendTo(nil, reqPath)
	if r.stripQuery {
		if q := bytes.IndexByte(p, '?'); q >= 0 {
			p = p[:q]
		}
	}
	return p
}
