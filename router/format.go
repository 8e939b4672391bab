package router

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/straitproxy/strait/protocol"
)

// format is a compiled header value: literal text mixed with the command
// operators of Envoy's substitution format that we support. Values without
// operators are kept as one literal and cost nothing per request.
type format struct {
	literal []byte // the value, when parts is nil
	parts   []part
}

type partKind uint8

const (
	partText partKind = iota
	partRemoteAddr
	partRemoteIP
	partLocalAddr
	partProtocol
	partReq
)

// part is one literal run or one operator.
type part struct {
	kind partKind
	text string // the literal text, or the header name of %REQ()%
	alt  string // %REQ(name?alt)%: read alt when name is absent
	max  int    // %REQ(name):N%: keep at most N bytes; 0 keeps all
}

// operators maps the supported operator names (without %) to their kinds.
var operators = map[string]partKind{
	"DOWNSTREAM_REMOTE_ADDRESS":              partRemoteAddr,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": partRemoteIP,
	"DOWNSTREAM_LOCAL_ADDRESS":               partLocalAddr,
	"PROTOCOL":                               partProtocol,
	"REQ":                                    partReq,
}

func (f *format) dynamic() bool { return f.parts != nil }

// parseFormat compiles a header value. "%%" is a literal percent sign; any
// other "%" must open a supported operator, else it is an error that names
// the operator.
func parseFormat(s string) (format, error) {
	var parts []part
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			parts = append(parts, part{kind: partText, text: text.String()})
			text.Reset()
		}
	}
	for i := 0; i < len(s); {
		switch {
		case s[i] != '%':
			text.WriteByte(s[i])
			i++
		case strings.HasPrefix(s[i:], "%%"):
			text.WriteByte('%')
			i += 2
		default:
			p, n, err := parseOperator(s[i:])
			if err != nil {
				return format{}, fmt.Errorf("at offset %d: %w", i, err)
			}
			flush()
			parts = append(parts, p)
			i += n
		}
	}
	if parts == nil {
		return format{literal: []byte(text.String())}, nil
	}
	flush()
	return format{parts: parts}, nil
}

// parseOperator parses "%NAME%", "%NAME(arg)%" or "%NAME(arg):N%" at the
// start of s and returns the part and the bytes consumed.
func parseOperator(s string) (part, int, error) {
	j := 1
	for j < len(s) && (s[j] == '_' || ('A' <= s[j] && s[j] <= 'Z') || ('0' <= s[j] && s[j] <= '9')) {
		j++
	}
	name := s[1:j]
	if name == "" {
		return part{}, 0, fmt.Errorf(`"%%" starts no command operator (write "%%%%" for a literal percent sign)`)
	}
	var arg string
	hasArg := j < len(s) && s[j] == '('
	if hasArg {
		k := strings.IndexByte(s[j:], ')')
		if k < 0 {
			return part{}, 0, fmt.Errorf("command operator %%%s: missing \")\"", name)
		}
		arg, j = s[j+1:j+k], j+k+1
	}
	var digits string
	if j < len(s) && s[j] == ':' {
		k := j + 1
		for k < len(s) && '0' <= s[k] && s[k] <= '9' {
			k++
		}
		digits, j = s[j+1:k], k
	}
	if j >= len(s) || s[j] != '%' {
		return part{}, 0, fmt.Errorf("command operator %q is not closed by \"%%\"", s[:j])
	}
	token := s[:j+1]
	p, err := makeOperator(name, arg, hasArg, digits, token)
	return p, j + 1, err
}

func makeOperator(name, arg string, hasArg bool, digits, token string) (part, error) {
	kind, ok := operators[name]
	if !ok {
		return part{}, fmt.Errorf("unknown command operator %s", token)
	}
	if kind != partReq {
		if hasArg || digits != "" {
			return part{}, fmt.Errorf("command operator %s takes no argument or length", token)
		}
		return part{kind: kind}, nil
	}
	p := part{kind: partReq}
	name, alt, _ := strings.Cut(arg, "?")
	p.text, p.alt = reqHeaderName(name), reqHeaderName(alt)
	if p.text == "" {
		return part{}, fmt.Errorf("command operator %s needs a header name", token)
	}
	if digits != "" {
		n, err := strconv.Atoi(digits)
		if err != nil || n <= 0 {
			return part{}, fmt.Errorf("command operator %s: bad length %q", token, digits)
		}
		p.max = n
	}
	return p, nil
}

// reqHeaderName lowercases a header name for lookup; "host" reads
// :authority, where codecs keep the HTTP/1 Host header.
func reqHeaderName(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "host" {
		return protocol.Authority
	}
	return name
}

// appendTo appends the value of f for one request to dst.
func (f *format) appendTo(dst []byte, src *protocol.Headers, v *Vars) []byte {
	for i := range f.parts {
		p := &f.parts[i]
		switch p.kind {
		case partText:
			dst = append(dst, p.text...)
		case partReq:
			dst = p.appendHeader(dst, src)
		default:
			if v != nil {
				dst = append(dst, p.varValue(v)...)
			}
		}
	}
	return dst
}

func (p *part) varValue(v *Vars) string {
	switch p.kind {
	case partRemoteAddr:
		return v.RemoteAddr
	case partRemoteIP:
		return addrHost(v.RemoteAddr)
	case partLocalAddr:
		return v.LocalAddr
	case partProtocol:
		return v.Protocol
	}
	return ""
}

func (p *part) appendHeader(dst []byte, src *protocol.Headers) []byte {
	if src == nil {
		return dst
	}
	val, ok := src.Get(p.text)
	if !ok && p.alt != "" {
		val, _ = src.Get(p.alt)
	}
	if p.max > 0 && len(val) > p.max {
		val = val[:p.max]
	}
	return append(dst, val...)
}

// addrHost strips the port from "ip:port" or "[v6]:port"; an address without
// a port is returned whole.
func addrHost(addr string) string {
	if strings.HasPrefix(addr, "[") {
		if end := strings.IndexByte(addr, ']'); end > 0 {
			return addr[1:end]
		}
		return addr
	}
	if strings.Count(addr, ":") == 1 {
		return addr[:strings.IndexByte(addr, ':')]
	}
	return addr
}
