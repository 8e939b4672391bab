package transport

import (
	"encoding/binary"
	"errors"
	"strings"
)

// ClientHello is what a listener filter needs from a TLS or TLCP
// ClientHello: enough to choose a filter chain, nothing to answer it.
type ClientHello struct {
	// RecordVersion is the first record's version: 0x0301..0x0303 for
	// TLS, 0x0101 for TLCP (GB/T 38636).
	RecordVersion uint16
	// Version is the client_version field (TLS 1.3 puts 0x0303 there and
	// its real versions in SupportedVersions).
	Version           uint16
	ServerName        string
	ALPN              []string
	SupportedVersions []uint16
}

// VersionTLCP is TLCP's version (GB/T 38636-2020), in a ClientHello's
// client_version.
const VersionTLCP = 0x0101

// MaxClientHello is the default bound on the handshake message a
// listener filter waits for (Envoy's max_client_hello_size default).
const MaxClientHello = 16 << 10

// Errors of ParseClientHello.
var (
	// ErrNotTLS: the bytes are not a TLS or TLCP handshake.
	ErrNotTLS = errors.New("not a TLS ClientHello")
	// ErrHelloTooLarge: the ClientHello is over the limit.
	ErrHelloTooLarge = errors.New("ClientHello too large")
)

// ParseClientHello reads the ClientHello at the start of data, which may
// span several handshake records. It returns more=true when data ends
// before the message does (offer it again with more bytes), ErrNotTLS
// when the bytes cannot be one, ErrHelloTooLarge when the message is over
// limit bytes (MaxClientHello when limit <= 0). It never retains data.
func ParseClientHello(data []byte, limit int) (h *ClientHello, more bool, err error) {
	if limit <= 0 {
		limit = MaxClientHello
	}
	// The record header: content type 22 (handshake), a version whose
	// major is 3 (TLS) or 1 (TLCP), a length of at most 2^14 + 2048.
	if len(data) >= 1 && data[0] != 22 {
		return nil, false, ErrNotTLS
	}
	if len(data) >= 2 && data[1] != 3 && data[1] != 1 {
		return nil, false, ErrNotTLS
	}
	if len(data) < 5 {
		return nil, true, nil
	}
	recVers := binary.BigEndian.Uint16(data[1:3])
	// Gather the handshake message from the records' fragments (a copy
	// only when it spans several).
	var msg []byte
	for off := 0; ; {
		if len(data)-off < 5 {
			return nil, true, nil
		}
		if data[off] != 22 || binary.BigEndian.Uint16(data[off+1:off+3]) != recVers {
			return nil, false, ErrNotTLS
		}
		n := int(binary.BigEndian.Uint16(data[off+3 : off+5]))
		if n == 0 || n > 1<<14+2048 {
			return nil, false, ErrNotTLS
		}
		frag := data[off+5 : min(len(data), off+5+n)]
		if off == 0 && len(frag) >= 4 {
			// The first record shows the message's type and length:
			// refuse before waiting for the rest.
			if frag[0] != 1 { // client_hello
				return nil, false, ErrNotTLS
			}
			if l := int(frag[1])<<16 | int(frag[2])<<8 | int(frag[3]); l > limit {
				return nil, false, ErrHelloTooLarge
			}
		}
		if len(frag) < n {
			return nil, true, nil
		}
		off += 5 + n
		if msg == nil {
			msg = frag
		} else {
			msg = append(msg[:len(msg):len(msg)], frag...)
		}
		if len(msg) >= 4 {
			if msg[0] != 1 {
				return nil, false, ErrNotTLS
			}
			l := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if l > limit {
				return nil, false, ErrHelloTooLarge
			}
			if len(msg)-4 >= l {
				msg = msg[4 : 4+l]
				break
			}
		}
	}
	h = &ClientHello{RecordVersion: recVers}
	if err := h.parseBody(msg); err != nil {
		return nil, false, err
	}
	return h, false, nil
}

// reader reads big-endian fields and length-prefixed vectors; any
// overrun makes ok false.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) u8() int {
	if len(r.b) < 1 {
		r.ok = false
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return int(v)
}

func (r *reader) u16() int {
	if len(r.b) < 2 {
		r.ok = false
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return int(v)
}

func (r *reader) bytes(n int) []byte {
	if len(r.b) < n || !r.ok {
		r.ok = false
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// parseBody reads the ClientHello body (RFC 8446 4.1.2; TLCP has the same
// layout with version 0x0101).
func (h *ClientHello) parseBody(msg []byte) error {
	r := &reader{b: msg, ok: true}
	h.Version = uint16(r.u16())
	r.bytes(32) // random
	if sid := r.u8(); sid > 32 {
		return ErrNotTLS
	} else {
		r.bytes(sid)
	}
	if cs := r.u16(); cs < 2 || cs%2 != 0 {
		return ErrNotTLS
	} else {
		r.bytes(cs)
	}
	if cm := r.u8(); cm < 1 {
		return ErrNotTLS
	} else {
		r.bytes(cm)
	}
	if !r.ok {
		return ErrNotTLS
	}
	if len(r.b) == 0 {
		return nil // no extensions
	}
	ext := &reader{b: r.bytes(r.u16()), ok: r.ok}
	if !ext.ok || len(r.b) != 0 {
		return ErrNotTLS
	}
	for len(ext.b) > 0 {
		typ := ext.u16()
		body := &reader{b: ext.bytes(ext.u16()), ok: true}
		if !ext.ok {
			return ErrNotTLS
		}
		switch typ {
		case 0: // server_name (RFC 6066 3)
			list := &reader{b: body.bytes(body.u16()), ok: body.ok}
			for list.ok && len(list.b) > 0 {
				kind := list.u8()
				name := list.bytes(list.u16())
				if list.ok && kind == 0 && h.ServerName == "" {
					h.ServerName = strings.ToLower(strings.TrimSuffix(string(name), "."))
				}
			}
			if !list.ok {
				return ErrNotTLS
			}
		case 16: // application_layer_protocol_negotiation (RFC 7301)
			list := &reader{b: body.bytes(body.u16()), ok: body.ok}
			for list.ok && len(list.b) > 0 {
				p := list.bytes(list.u8())
				if list.ok && len(p) > 0 {
					h.ALPN = append(h.ALPN, string(p))
				}
			}
			if !list.ok {
				return ErrNotTLS
			}
		case 43: // supported_versions (RFC 8446 4.2.1)
			list := &reader{b: body.bytes(body.u8()), ok: body.ok}
			for list.ok && len(list.b) >= 2 {
				h.SupportedVersions = append(h.SupportedVersions, uint16(list.u16()))
			}
			if !list.ok || len(list.b) != 0 {
				return ErrNotTLS
			}
		}
	}
	return nil
}
