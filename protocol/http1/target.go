package http1

import (
	"bytes"

	"github.com/straitproxy/strait/protocol"
)

// parseRequestLine parses "method SP request-target SP HTTP-version" (one
// SP each, RFC 9112 §3) and adds ":method" and the pseudo-headers of the
// request-target to h. hostInTarget reports that ":authority" came from
// the request-target; otherwise an empty ":authority" placeholder was added
// for setAuthority to fill from Host, so that it sits in front of the fields.
func parseRequestLine(line []byte, h *protocol.Headers) (minor int, hostInTarget bool, err error) {
	m := tokenLen(line)
	if m == 0 || m == len(line) || line[m] != ' ' {
		return 0, false, newError(400, "invalid method")
	}
	method, rest := line[:m], line[m+1:]
	sp := bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return 0, false, newError(400, "malformed request line")
	}
	if minor, err = parseVersion(rest[sp+1:]); err != nil {
		return 0, false, err
	}
	h.Add(methodName, method)
	hostInTarget, err = addTarget(h, method, rest[:sp])
	return minor, hostInTarget, err
}

// addTarget adds the pseudo-headers for one of the four forms of
// request-target (RFC 9112 §3.2).
func addTarget(h *protocol.Headers, method, target []byte) (hostInTarget bool, err error) {
	if err := checkTarget(target); err != nil {
		return false, err
	}
	switch {
	case string(method) == "CONNECT":
		if !validAuthorityForm(target) {
			return false, newError(400, "invalid connect target")
		}
		h.Add(authorityName, target)
		return true, nil
	case target[0] == '/':
		h.Add(authorityName, nil)
		h.Add(pathName, target)
		return false, nil
	case len(target) == 1 && target[0] == '*':
		if string(method) != "OPTIONS" {
			return false, newError(400, "asterisk-form without options")
		}
		h.Add(authorityName, nil)
		h.Add(pathName, target)
		return false, nil
	}
	return true, addAbsolute(h, method, target)
}

// checkTarget refuses what protocol.CheckTarget refuses.
func checkTarget(t []byte) error {
	if why := protocol.CheckTarget(t); why != "" {
		return newError(400, why)
	}
	return nil
}

// addAbsolute handles absolute-form, "http://host/p?q", as sent to proxies:
// ":scheme" gets the lowercased scheme, ":authority" the host and ":path"
// the rest in origin-form.
func addAbsolute(h *protocol.Headers, method, target []byte) error {
	scheme, rest := cutScheme(target)
	if scheme == "" {
		return newError(400, "invalid request-target")
	}
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' {
			end = i
			break
		}
	}
	auth, path := rest[:end], rest[end:]
	// hostChars has no "@", so userinfo is refused (RFC 9110 §4.2.4).
	if len(auth) == 0 || !validHost(auth) {
		return newError(400, "invalid authority in request-target")
	}
	h.AddString(protocol.Scheme, scheme)
	h.Add(authorityName, auth)
	switch {
	case len(path) == 0 && string(method) == "OPTIONS":
		// RFC 9112 §3.2.4: an empty path in OPTIONS means the server itself.
		h.AddString(protocol.Path, "*")
	case len(path) == 0:
		h.AddString(protocol.Path, "/")
	case path[0] == '?':
		var scratch [128]byte
		h.Add(pathName, append(append(scratch[:0], '/'), path...))
	default:
		h.Add(pathName, path)
	}
	return nil
}

func cutScheme(t []byte) (scheme string, rest []byte) {
	if len(t) > 7 && protocol.EqualFold(t[:7], "http://") {
		return "http", t[7:]
	}
	if len(t) > 8 && protocol.EqualFold(t[:8], "https://") {
		return "https", t[8:]
	}
	return "", nil
}

// validAuthorityForm accepts CONNECT's "host:port" (RFC 9112 §3.2.3).
func validAuthorityForm(t []byte) bool { return protocol.ValidAuthorityForm(t) }
