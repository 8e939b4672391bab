// Package tlcp is TLCP (GB/T 38636-2020, wire version 0x0101), the
// Chinese national transport layer protocol, on SM2, SM3 and SM4 from
// github.com/emmansun/gmsm, and its transport socket for Strait's
// listeners and clusters (README.md has the config).
//
// TLCP is TLS 1.1/1.2's record layer and handshake with SM algorithms
// and two server certificates: one signs (the handshake), one encrypts
// (the premaster secret, or the static half of the SM2 key exchange).
// This package speaks its server and client sides: the suites
// ECC_SM4_CBC_SM3, ECC_SM4_GCM_SM3, ECDHE_SM4_CBC_SM3 and
// ECDHE_SM4_GCM_SM3, client authentication, and session resumption by
// session ID. No renegotiation, no compression, no extensions but
// server_name sent by the client.
package tlcp

import (
	"crypto/cipher"
	"fmt"

	"github.com/emmansun/gmsm/sm4"
)

// VersionTLCP is TLCP's protocol version on the wire.
const VersionTLCP = 0x0101

// Cipher suites (GB/T 38636-2020 6.4.5.2.1).
const (
	ECDHE_SM4_CBC_SM3 uint16 = 0xe011
	ECC_SM4_CBC_SM3   uint16 = 0xe013
	ECDHE_SM4_GCM_SM3 uint16 = 0xe051
	ECC_SM4_GCM_SM3   uint16 = 0xe053
)

// suite is what a cipher suite means.
type suite struct {
	id    uint16
	name  string
	ecdhe bool // SM2 key exchange with ephemeral keys; else the premaster is SM2-encrypted
	gcm   bool // SM4-GCM records; else SM4-CBC with HMAC-SM3
}

var suites = []*suite{
	{ECC_SM4_GCM_SM3, "ECC_SM4_GCM_SM3", false, true},
	{ECC_SM4_CBC_SM3, "ECC_SM4_CBC_SM3", false, false},
	{ECDHE_SM4_GCM_SM3, "ECDHE_SM4_GCM_SM3", true, true},
	{ECDHE_SM4_CBC_SM3, "ECDHE_SM4_CBC_SM3", true, false},
}

// DefaultSuites is the order a client offers and a server prefers when
// the config names none.
var DefaultSuites = []uint16{ECC_SM4_GCM_SM3, ECC_SM4_CBC_SM3, ECDHE_SM4_GCM_SM3, ECDHE_SM4_CBC_SM3}

func suiteByID(id uint16) *suite {
	for _, s := range suites {
		if s.id == id {
			return s
		}
	}
	return nil
}

// SuiteByName returns a suite's id by its name ("ECC_SM4_GCM_SM3").
func SuiteByName(name string) (uint16, bool) {
	for _, s := range suites {
		if s.name == name {
			return s.id, true
		}
	}
	return 0, false
}

// SuiteName is a suite's name, or its hex id when unknown.
func SuiteName(id uint16) string {
	if s := suiteByID(id); s != nil {
		return s.name
	}
	return fmt.Sprintf("0x%04X", id)
}

// keyLengths are the sizes cut from the key block: MAC key, cipher key,
// IV (GB/T 38636 6.5.2: 32/16/16 for CBC; RFC 5288's 0/16/4 for GCM).
func (s *suite) keyLengths() (mac, key, iv int) {
	if s.gcm {
		return 0, 16, 4
	}
	return 32, 16, 16
}

// newBlock is SM4 with key k.
func newBlock(k []byte) cipher.Block {
	b, err := sm4.NewCipher(k)
	if err != nil {
		panic("tlcp: " + err.Error()) // a 16-byte key never fails
	}
	return b
}
