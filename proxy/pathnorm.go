package proxy

import (
	"bytes"

	"github.com/straitproxy/strait/protocol"
)

// Path normalization before filters and routing, as the connection
// manager's path_with_escaped_slashes_action, normalize_path and
// merge_slashes say, in Envoy's order: escaped slashes first, then the
// RFC 3986 normalization, then merging slashes. The query is left as it
// is. RBAC and routes then see the path the upstream gets.

// EscapedSlashes is path_with_escaped_slashes_action.
type EscapedSlashes uint8

const (
	// SlashesKeep leaves %2F and %5C as they are (the default).
	SlashesKeep EscapedSlashes = iota
	// SlashesReject answers 400 to a path holding one.
	SlashesReject
	// SlashesUnescape turns them into "/" and "\" and forwards.
	SlashesUnescape
)

// PathNormalization is the connection manager's path settings.
type PathNormalization struct {
	Normalize, MergeSlashes bool
	EscapedSlashes          EscapedSlashes
}

func (p PathNormalization) on() bool {
	return p.Normalize || p.MergeSlashes || p.EscapedSlashes != SlashesKeep
}

// normalizePath applies the settings to the request's path; false after
// it answered 400.
func (s *Stream) normalizePath(h *protocol.Headers) bool {
	pn := s.cfg.PathNormalization
	if !pn.on() {
		return true
	}
	full := h.Path()
	if len(full) == 0 || full[0] != '/' {
		return true // "*", or a CONNECT's
	}
	path, query := full, []byte(nil)
	if i := bytes.IndexByte(full, '?'); i >= 0 {
		path, query = full[:i], full[i:]
	}
	out := append(s.scratch[:0], path...)
	if pn.EscapedSlashes != SlashesKeep && hasEscapedSlash(out) {
		if pn.EscapedSlashes == SlashesReject {
			s.cfg.Stats.RqFailedPathNormalization.Inc()
			s.details = "path_normalization_failed"
			s.localReply(400, "Bad Request", false)
			return false
		}
		out = unescapeSlashes(out)
	}
	if pn.Normalize {
		out = removeDotSegments(canonicalPath(out))
	}
	if pn.MergeSlashes {
		out = mergeSlashes(out)
	}
	if !bytes.Equal(out, path) {
		out = append(out, query...)
		h.SetBytes(protocol.Path, out)
	}
	s.scratch = out[:0]
	return true
}

func hasEscapedSlash(p []byte) bool {
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && (p[i+1] == '2' && (p[i+2] == 'f' || p[i+2] == 'F') || p[i+1] == '5' && (p[i+2] == 'c' || p[i+2] == 'C')) {
			return true
		}
	}
	return false
}

// unescapeSlashes turns %2F and %5C (any case) into "/" and "\", in place.
func unescapeSlashes(p []byte) []byte {
	w := 0
	for r := 0; r < len(p); r++ {
		if p[r] == '%' && r+2 < len(p) {
			switch {
			case p[r+1] == '2' && (p[r+2] == 'f' || p[r+2] == 'F'):
				p[w], r, w = '/', r+2, w+1
				continue
			case p[r+1] == '5' && (p[r+2] == 'c' || p[r+2] == 'C'):
				p[w], r, w = '\\', r+2, w+1
				continue
			}
		}
		p[w] = p[r]
		w++
	}
	return p[:w]
}

// canonicalPath is the per-character part of the normalization, as
// browsers canonicalize an http URL's path (which is what Envoy uses): a
// backslash is a slash, an escaped unreserved character (RFC 3986 §2.3:
// letters, digits, "-", ".", "_", "~") is decoded, other escapes stay as
// written, and bytes a path may not hold raw (controls, space, '"', '<',
// '>', '`', '{', '}', non-ASCII, and a '%' that begins no escape, so
// that "%7%61" cannot become "%7a" and then "z" on the next hop's
// decoding) are escaped. In place when nothing grows; appended to a new
// slice otherwise.
func canonicalPath(p []byte) []byte {
	grow := false
	for i, c := range p {
		if mustEscape(c) || c == '%' && !escaped(p, i) {
			grow = true
			break
		}
	}
	var out []byte
	if grow {
		out = make([]byte, 0, len(p)+16)
	} else {
		out = p[:0] // writes never pass reads: decoding only shrinks
	}
	const hexDigits = "0123456789ABCDEF"
	for r := 0; r < len(p); r++ {
		c := p[r]
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%' && escaped(p, r):
			if d, _ := protocol.PercentByte(p, r); unreserved(d) {
				out = append(out, d)
			} else {
				out = append(out, c, p[r+1], p[r+2])
			}
			r += 2
		case mustEscape(c) || c == '%': // (a '%' that begins no escape: "%25")
			out = append(out, '%', hexDigits[c>>4], hexDigits[c&15])
		default:
			out = append(out, c)
		}
	}
	return out
}

func mustEscape(c byte) bool {
	return c <= ' ' || c >= 0x7f || c == '"' || c == '<' || c == '>' || c == '`' || c == '{' || c == '}'
}

// escaped reports whether p[i] begins an escape "%XY".
func escaped(p []byte, i int) bool {
	_, ok := protocol.PercentByte(p, i)
	return ok
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments is RFC 3986 §5.2.4 on an absolute path, in place
// (what is written never passes what is read): "." segments go, ".."
// takes the segment before it away (never above the root); a path that
// ended in one ends in "/".
func removeDotSegments(p []byte) []byte {
	out := p[:0]
	for r := 0; r < len(p); {
		end := r + 1 // p[r] is '/'; the segment is p[r+1:end]
		for end < len(p) && p[end] != '/' {
			end++
		}
		seg, last := p[r+1:end], end == len(p)
		switch {
		case len(seg) == 1 && seg[0] == '.':
			if last {
				out = append(out, '/')
			}
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			if i := bytes.LastIndexByte(out, '/'); i >= 0 {
				out = out[:i]
			}
			if last {
				out = append(out, '/')
			}
		default:
			out = append(out, p[r:end]...)
		}
		r = end
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return out
}

// mergeSlashes collapses runs of "/" into one, in place.
func mergeSlashes(p []byte) []byte {
	w := 0
	for r := 0; r < len(p); r++ {
		if p[r] == '/' && w > 0 && p[w-1] == '/' {
			continue
		}
		p[w] = p[r]
		w++
	}
	return p[:w]
}
