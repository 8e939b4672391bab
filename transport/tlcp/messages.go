package tlcp

import (
	"errors"

	"golang.org/x/crypto/cryptobyte"
)

// Handshake message types (GB/T 38636 6.4.5).
const (
	typeHelloRequest       = 0
	typeClientHello        = 1
	typeServerHello        = 2
	typeCertificate        = 11
	typeServerKeyExchange  = 12
	typeCertificateRequest = 13
	typeServerHelloDone    = 14
	typeCertificateVerify  = 15
	typeClientKeyExchange  = 16
	typeFinished           = 20
)

var errDecode = errors.New("tlcp: malformed handshake message")

// message frames a handshake body with its type and 24-bit length.
func message(typ byte, body func(b *cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	b.AddUint8(typ)
	b.AddUint24LengthPrefixed(body)
	return b.BytesOrPanic()
}

type clientHello struct {
	vers       uint16
	random     []byte
	sessionID  []byte
	suites     []uint16
	serverName string
}

func (m *clientHello) marshal() []byte {
	return message(typeClientHello, func(b *cryptobyte.Builder) {
		b.AddUint16(m.vers)
		b.AddBytes(m.random)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.sessionID) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, s := range m.suites {
				b.AddUint16(s)
			}
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) }) // null compression
		if m.serverName != "" {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				b.AddUint16(0) // server_name (RFC 6066)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint8(0) // host_name
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(m.serverName)) })
					})
				})
			})
		}
	})
}

// unmarshal parses a ClientHello's body (after type and length).
func (m *clientHello) unmarshal(body []byte) error {
	s := cryptobyte.String(body)
	var suites, comp cryptobyte.String
	if !s.ReadUint16(&m.vers) || !s.ReadBytes(&m.random, 32) ||
		!readUint8Bytes(&s, &m.sessionID) || len(m.sessionID) > 32 ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites) == 0 || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&comp) || len(comp) == 0 {
		return errDecode
	}
	for !suites.Empty() {
		var id uint16
		suites.ReadUint16(&id)
		m.suites = append(m.suites, id)
	}
	nullComp := false
	for _, c := range comp {
		nullComp = nullComp || c == 0
	}
	if !nullComp {
		return errors.New("tlcp: the client offers no null compression")
	}
	if s.Empty() {
		return nil
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return errDecode
	}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return errDecode
		}
		if typ != 0 { // only server_name matters; others are ignored (RFC 5246 7.4.1.4)
			continue
		}
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
			return errDecode
		}
		for !list.Empty() {
			var nameType uint8
			var name cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
				return errDecode
			}
			if nameType == 0 {
				m.serverName = string(name)
			}
		}
	}
	return nil
}

type serverHello struct {
	vers      uint16
	random    []byte
	sessionID []byte
	suite     uint16
}

func (m *serverHello) marshal() []byte {
	return message(typeServerHello, func(b *cryptobyte.Builder) {
		b.AddUint16(m.vers)
		b.AddBytes(m.random)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.sessionID) })
		b.AddUint16(m.suite)
		b.AddUint8(0)
	})
}

func (m *serverHello) unmarshal(body []byte) error {
	s := cryptobyte.String(body)
	var comp uint8
	if !s.ReadUint16(&m.vers) || !s.ReadBytes(&m.random, 32) ||
		!readUint8Bytes(&s, &m.sessionID) || len(m.sessionID) > 32 ||
		!s.ReadUint16(&m.suite) || !s.ReadUint8(&comp) {
		return errDecode
	}
	if comp != 0 {
		return errors.New("tlcp: the server chose a compression method")
	}
	// Extensions the client did not ask for are refused; it asks none
	// back (server_name's answer is empty and may come).
	if !s.Empty() {
		var exts cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
			return errDecode
		}
		for !exts.Empty() {
			var typ uint16
			var data cryptobyte.String
			if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) || typ != 0 || !data.Empty() {
				return errors.New("tlcp: the server sent an extension the client did not offer")
			}
		}
	}
	return nil
}

// certificateMsg is a Certificate: for a server, the signing
// certificate, the encryption certificate, then the chain.
type certificateMsg struct{ certs [][]byte }

func (m *certificateMsg) marshal() []byte {
	return message(typeCertificate, func(b *cryptobyte.Builder) {
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, c := range m.certs {
				b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(c) })
			}
		})
	})
}

func (m *certificateMsg) unmarshal(body []byte) error {
	s := cryptobyte.String(body)
	var list cryptobyte.String
	if !s.ReadUint24LengthPrefixed(&list) || !s.Empty() {
		return errDecode
	}
	for !list.Empty() {
		var c cryptobyte.String
		if !list.ReadUint24LengthPrefixed(&c) || len(c) == 0 {
			return errDecode
		}
		m.certs = append(m.certs, c)
	}
	return nil
}

// certificateRequest: certificate types and CA names (no signature
// algorithms in TLCP).
type certificateRequest struct {
	types []byte
	cas   [][]byte
}

// Certificate types of a CertificateRequest (GB/T 38636 6.4.5.5).
const (
	certTypeRSASign   = 1
	certTypeECDSASign = 64
	certTypeIBCParams = 80
)

func (m *certificateRequest) marshal() []byte {
	return message(typeCertificateRequest, func(b *cryptobyte.Builder) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.types) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, ca := range m.cas {
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(ca) })
			}
		})
	})
}

func (m *certificateRequest) unmarshal(body []byte) error {
	s := cryptobyte.String(body)
	var cas cryptobyte.String
	if !readUint8Bytes(&s, &m.types) || len(m.types) == 0 || !s.ReadUint16LengthPrefixed(&cas) || !s.Empty() {
		return errDecode
	}
	for !cas.Empty() {
		var ca []byte
		if !readUint16Bytes(&cas, &ca) || len(ca) == 0 {
			return errDecode
		}
		m.cas = append(m.cas, ca)
	}
	return nil
}

// opaque16 is a message whose body is one 16-bit length-prefixed vector
// (ServerKeyExchange's signature, an ECC ClientKeyExchange, a
// CertificateVerify).
func opaque16(typ byte, v []byte) []byte {
	return message(typ, func(b *cryptobyte.Builder) {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(v) })
	})
}

func readOpaque16(body []byte) ([]byte, error) {
	s := cryptobyte.String(body)
	var v []byte
	if !readUint16Bytes(&s, &v) || len(v) == 0 || !s.Empty() {
		return nil, errDecode
	}
	return v, nil
}

// ecdheParams are ServerECDHParams: named curve SM2 (RFC 8998's 41) and
// a 65-byte uncompressed point.
const curveSM2 = 41

func ecdheParams(point []byte) []byte {
	var b cryptobyte.Builder
	b.AddUint8(3) // named_curve
	b.AddUint16(curveSM2)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(point) })
	return b.BytesOrPanic()
}

// readECDHEParams reads ServerECDHParams from s, returning the point.
func readECDHEParams(s *cryptobyte.String) ([]byte, error) {
	var ctype uint8
	var curve uint16
	var point []byte
	if !s.ReadUint8(&ctype) || !s.ReadUint16(&curve) || !readUint8Bytes(s, &point) {
		return nil, errDecode
	}
	if ctype != 3 || curve != curveSM2 {
		return nil, errors.New("tlcp: ECDHE parameters are not on the SM2 curve")
	}
	if len(point) != 65 || point[0] != 4 {
		return nil, errors.New("tlcp: ECDHE point is not an uncompressed SM2 point")
	}
	return point, nil
}

// parseClientECDHE reads an ECDHE ClientKeyExchange: the client's
// ECDHParams, bare (69 bytes, gotlcp) or inside a 16-bit vector (71
// bytes, as some implementations send).
func parseClientECDHE(body []byte) ([]byte, error) {
	s := cryptobyte.String(body)
	if len(body) > 2 && int(body[0])<<8|int(body[1]) == len(body)-2 {
		var inner cryptobyte.String
		s.ReadUint16LengthPrefixed(&inner)
		s = inner
	}
	p, err := readECDHEParams(&s)
	if err != nil {
		return nil, err
	}
	if !s.Empty() {
		return nil, errDecode
	}
	return p, nil
}

func readUint8Bytes(s *cryptobyte.String, out *[]byte) bool {
	var v cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&v) {
		return false
	}
	*out = v
	return true
}

func readUint16Bytes(s *cryptobyte.String, out *[]byte) bool {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) {
		return false
	}
	*out = v
	return true
}
