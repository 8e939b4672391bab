package dubbo

import (
	"errors"
	"fmt"
	"strconv"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/rpc"
)

// Head is the start of a request's body: what routing reads. The slices
// point into the frame.
type Head struct {
	DubboVersion []byte
	Service      []byte // the interface ("path")
	Version      []byte // the service version
	Method       []byte
	Types        []byte // the parameter types descriptor ("Ljava/lang/String;I")
}

// ReadHead reads the five strings that open a request body and returns
// the rest (the arguments, then the attachments). It reads hessian2's
// string forms itself and allocates nothing.
func ReadHead(body []byte, h *Head) (rest []byte, err error) {
	fields := [...]*[]byte{&h.DubboVersion, &h.Service, &h.Version, &h.Method, &h.Types}
	names := [...]string{"dubbo version", "service path", "service version", "method name", "parameter types"}
	for i, f := range fields {
		if *f, body, err = readString(body); err != nil {
			return nil, fmt.Errorf("dubbo: request %s: %w", names[i], err)
		}
	}
	if len(h.Service) == 0 {
		return nil, errors.New("dubbo: request has no service path")
	}
	if len(h.Method) == 0 {
		return nil, errors.New("dubbo: request has no method name")
	}
	return body, nil
}

var errShort = errors.New("truncated")

// readString reads one hessian2 string (or null, read as empty) in a
// single chunk: its UTF-8 bytes and what follows. Lengths count UTF-16
// units, as Java writes them (a supplementary character is a surrogate
// pair, three bytes each).
func readString(b []byte) (s, rest []byte, err error) {
	if len(b) == 0 {
		return nil, nil, errShort
	}
	var chars int
	tag := b[0]
	switch {
	case tag == 'N':
		return nil, b[1:], nil
	case tag <= 0x1f:
		chars, b = int(tag), b[1:]
	case tag >= 0x30 && tag <= 0x33:
		if len(b) < 2 {
			return nil, nil, errShort
		}
		chars, b = int(tag-0x30)<<8|int(b[1]), b[2:]
	case tag == 'S':
		if len(b) < 3 {
			return nil, nil, errShort
		}
		chars, b = int(b[1])<<8|int(b[2]), b[3:]
	case tag == 'R':
		return nil, nil, errors.New("chunked string (over 4096 characters in a call head)")
	default:
		return nil, nil, fmt.Errorf("not a string (tag 0x%02x)", tag)
	}
	n := 0
	for ; chars > 0; chars-- {
		if n >= len(b) {
			return nil, nil, errShort
		}
		c, size := b[n], 0
		switch {
		case c < 0x80:
			size = 1
		case c&0xe0 == 0xc0:
			size = 2
		case c&0xf0 == 0xe0:
			size = 3
		default:
			return nil, nil, fmt.Errorf("bad utf-8 byte 0x%02x", c)
		}
		if n+size > len(b) {
			return nil, nil, errShort
		}
		// Continuation bytes are 10xxxxxx: a Java writer sends nothing
		// else, and decoders disagree on where a string with anything
		// else ends, so it is refused rather than guessed at.
		for _, c := range b[n+1 : n+size] {
			if c&0xc0 != 0x80 {
				return nil, nil, fmt.Errorf("bad utf-8 continuation byte 0x%02x", c)
			}
		}
		n += size
	}
	return b[:n], b[n:], nil
}

// CountTypes counts the parameters a JVM types descriptor names
// ("Ljava/lang/String;[IJ" is three).
func CountTypes(desc []byte) (int, error) {
	n := 0
	for i := 0; i < len(desc); {
		for i < len(desc) && desc[i] == '[' {
			i++
		}
		if i == len(desc) {
			return 0, errors.New("dubbo: parameter types end inside an array type")
		}
		switch desc[i] {
		case 'Z', 'B', 'C', 'S', 'I', 'J', 'F', 'D':
			i++
		case 'L':
			j := i
			for j < len(desc) && desc[j] != ';' {
				j++
			}
			if j == len(desc) {
				return 0, errors.New("dubbo: parameter types: class name without ';'")
			}
			i = j + 1
		default:
			return 0, fmt.Errorf("dubbo: parameter types: unexpected %q", desc[i])
		}
		n++
	}
	return n, nil
}

// Attachment keys that are the call's routing keys, not user data.
const (
	// GroupHeader carries the attachment "group".
	GroupHeader = "group"
	// VersionHeader carries the service version.
	VersionHeader = "version"
	// ParamPrefix names the headers that carry arguments for routing.
	ParamPrefix = rpc.ParamPrefix
)

// readAttachments walks the arguments (skip.go) and adds the
// attachments map's string entries to h (names lowercased, as all header
// names; keys that would be pseudo-headers are dropped); "timeout"
// (milliseconds) also becomes rpc.TimeoutHeader. This path allocates
// nothing. With params, dubbo-go-hessian2 decodes the arguments (the
// walker having checked every size they declare) and those that are
// strings, numbers or booleans become ":param-N".
func readAttachments(rest []byte, head *Head, h *protocol.Headers, params bool) error {
	n, err := CountTypes(head.Types)
	if err != nil {
		return err
	}
	var w walker
	b := rest
	for i := 0; i < n; i++ {
		if b, err = w.value(b, 0); err != nil {
			return fmt.Errorf("dubbo: argument %d: %v", i, err)
		}
	}
	if len(b) > 0 {
		if _, err := w.attachments(b, h); err != nil {
			return fmt.Errorf("dubbo: attachments: %v", err)
		}
	}
	if params && n > 0 {
		return decodeParams(rest, n, h)
	}
	return nil
}

// attachments reads a map of attachments into h.
func (w *walker) attachments(b []byte, h *protocol.Headers) ([]byte, error) {
	if len(b) == 0 {
		return nil, errShort
	}
	switch b[0] {
	case 'N':
		return b[1:], nil
	case 'H':
		b = b[1:]
	case 'M':
		var err error
		if b, err = w.typeName(b[1:]); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("a 0x%02x where a map belongs", b[0])
	}
	for {
		if len(b) == 0 {
			return nil, errShort
		}
		if b[0] == 'Z' {
			return b[1:], nil
		}
		k, rest, kerr := readString(b)
		if kerr != nil {
			var err error
			if rest, err = w.value(b, 1); err != nil {
				return nil, err
			}
		}
		v, after, verr := readString(rest)
		if verr != nil {
			var err error
			if after, err = w.value(rest, 1); err != nil {
				return nil, err
			}
		}
		if kerr == nil && verr == nil && len(k) > 0 && k[0] != ':' {
			if len(k) == len("timeout") && protocol.EqualFold(k, "timeout") {
				h.SetBytes(rpc.TimeoutHeader, v)
			}
			if !(len(k) == len(VersionHeader) && protocol.EqualFold(k, VersionHeader) && h.Has(VersionHeader)) {
				h.Add(k, v) // the head's service version wins
			}
		}
		b = after
	}
}

// decodeParams decodes the arguments with hessian2 (after the walker
// accepted the body; a library panic is an error, not a crash).
func decodeParams(rest []byte, n int, h *protocol.Headers) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("dubbo: undecodable arguments: %v", r)
		}
	}()
	d := hessian.NewDecoderWithSkip(rest)
	for i := 0; i < n; i++ {
		v, err := d.Decode()
		if err != nil {
			return fmt.Errorf("dubbo: argument %d: %v", i, err)
		}
		if s, ok := scalar(v); ok {
			h.Set(ParamPrefix+strconv.Itoa(i), s)
		}
	}
	return nil
}

// scalar renders an argument that routing can match.
func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case int:
		return strconv.Itoa(x), true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	}
	return "", false
}
