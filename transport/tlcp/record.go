package tlcp

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"
	"io"

	"github.com/emmansun/gmsm/sm3"
)

// Record content types.
const (
	recordChangeCipherSpec = 20
	recordAlert            = 21
	recordHandshake        = 22
	recordApplicationData  = 23
)

const (
	recordHeaderLen = 5
	maxPlaintext    = 1 << 14
	// maxCiphertext bounds a record's payload (GB/T 38636 6.3.3.3:
	// 2^14 + 2048).
	maxCiphertext = maxPlaintext + 2048
	macSize       = 32 // HMAC-SM3
	blockSize     = 16 // SM4
	gcmExplicit   = 8
	gcmTag        = 16
)

var (
	errBadRecordMAC = errors.New("tlcp: bad record MAC")
	errRecordLength = errors.New("tlcp: bad record length")
)

// halfConn is one direction's record protection. Before
// ChangeCipherSpec it is the null cipher.
type halfConn struct {
	seq [8]byte
	// Either CBC (block, mac) or GCM (aead, implicit IV).
	block    cipher.Block
	cbcEnc   cipher.BlockMode // reused: SetIV per record
	cbcDec   cipher.BlockMode
	mac      hash.Hash
	dummy    hash.Hash // equalize's
	aead     cipher.AEAD
	implicit [4]byte
	hdr      [13]byte // the MAC's or AAD's prefix (here: not to escape per record)
	nonce    [12]byte
	sum      [macSize]byte
	// next is the protection that takes over at ChangeCipherSpec.
	next *halfConn
}

// newHalf builds a direction's protection from its keys.
func newHalf(s *suite, macKey, key, iv []byte) *halfConn {
	h := &halfConn{}
	b := newBlock(key)
	if s.gcm {
		a, err := cipher.NewGCM(b)
		if err != nil {
			panic("tlcp: " + err.Error())
		}
		h.aead = a
		copy(h.implicit[:], iv)
		return h
	}
	h.block = b
	zero := make([]byte, blockSize)
	h.cbcEnc = cipher.NewCBCEncrypter(b, zero)
	h.cbcDec = cipher.NewCBCDecrypter(b, zero)
	h.mac = hmac.New(sm3.New, macKey)
	return h
}

// active reports whether records are protected.
func (h *halfConn) active() bool { return h.aead != nil || h.block != nil }

// change switches to the pending protection (ChangeCipherSpec) and
// restarts the sequence number.
func (h *halfConn) change() error {
	if h.next == nil {
		return errors.New("tlcp: ChangeCipherSpec before the keys")
	}
	*h = *h.next
	return nil
}

func (h *halfConn) incSeq() {
	for i := 7; i >= 0; i-- {
		h.seq[i]++
		if h.seq[i] != 0 {
			return
		}
	}
	// 2^64 records: the peer must renegotiate, which TLCP here does not.
	panic("tlcp: sequence number wrapped")
}

// macHeader is the MAC's and AAD's prefix: seq, type, version, length.
func (h *halfConn) macHeader(buf *[13]byte, typ byte, n int) []byte {
	copy(buf[:8], h.seq[:])
	buf[8] = typ
	buf[9], buf[10] = VersionTLCP>>8, VersionTLCP&0xff
	buf[11], buf[12] = byte(n>>8), byte(n)
	return buf[:]
}

// sealedLen is the payload length of a record carrying n plaintext bytes.
func (h *halfConn) sealedLen(n int) int {
	switch {
	case h.aead != nil:
		return gcmExplicit + n + gcmTag
	case h.block != nil:
		l := n + macSize + 1
		l += (blockSize - l%blockSize) % blockSize
		return blockSize + l
	}
	return n
}

// seal appends a whole record (header and payload) carrying plaintext p
// of type typ to out.
func (h *halfConn) seal(out []byte, typ byte, p []byte) ([]byte, error) {
	n := h.sealedLen(len(p))
	out = append(out, typ, VersionTLCP>>8, VersionTLCP&0xff, byte(n>>8), byte(n))
	hdr := &h.hdr
	switch {
	case h.aead != nil:
		nonce := h.nonce[:]
		copy(nonce[:4], h.implicit[:])
		copy(nonce[4:], h.seq[:])
		out = append(out, h.seq[:]...)
		out = h.aead.Seal(out, nonce, p, h.macHeader(hdr, typ, len(p)))
	case h.block != nil:
		start := len(out)
		out = append(out, make([]byte, blockSize)...)
		iv := out[start : start+blockSize]
		if _, err := io.ReadFull(rand.Reader, iv); err != nil {
			return nil, err
		}
		body := len(out)
		out = append(out, p...)
		h.mac.Reset()
		h.mac.Write(h.macHeader(hdr, typ, len(p)))
		h.mac.Write(p)
		out = h.mac.Sum(out)
		pad := n - blockSize - len(p) - macSize // 1..16
		for i := 0; i < pad; i++ {
			out = append(out, byte(pad-1))
		}
		h.cbcEnc.(interface{ SetIV([]byte) }).SetIV(iv)
		h.cbcEnc.CryptBlocks(out[body:], out[body:])
	default:
		out = append(out, p...)
	}
	h.incSeq()
	return out, nil
}

// open decrypts a record's payload in place and returns its plaintext.
func (h *halfConn) open(typ byte, payload []byte) ([]byte, error) {
	hdr := &h.hdr
	switch {
	case h.aead != nil:
		if len(payload) < gcmExplicit+gcmTag {
			return nil, errBadRecordMAC
		}
		nonce := h.nonce[:]
		copy(nonce[:4], h.implicit[:])
		copy(nonce[4:], payload[:gcmExplicit])
		ct := payload[gcmExplicit:]
		p, err := h.aead.Open(ct[:0], nonce, ct, h.macHeader(hdr, typ, len(ct)-gcmTag))
		if err != nil {
			return nil, errBadRecordMAC
		}
		h.incSeq()
		return p, nil
	case h.block != nil:
		// The IV, then at least one block holding the MAC and the
		// padding length, in whole blocks.
		if len(payload) < blockSize+macSize+1 || len(payload)%blockSize != 0 {
			return nil, errBadRecordMAC
		}
		iv, body := payload[:blockSize], payload[blockSize:]
		h.cbcDec.(interface{ SetIV([]byte) }).SetIV(iv)
		h.cbcDec.CryptBlocks(body, body)
		// The padding is checked, and the MAC computed and compared,
		// without a branch on the padding's validity; the MAC's input
		// length depends on the padding length (Lucky13), so as many
		// SM3 compressions as the longest input would take are run
		// whatever the padding was.
		padLen, good := cbcPadding(body)
		n := len(body) - macSize - padLen
		h.mac.Reset()
		h.mac.Write(h.macHeader(hdr, typ, n))
		h.mac.Write(body[:n])
		mac := h.mac.Sum(h.sum[:0])
		h.equalize(n, len(body)-macSize-1)
		good &= subtle.ConstantTimeCompare(mac, body[n:n+macSize])
		if good != 1 {
			return nil, errBadRecordMAC
		}
		h.incSeq()
		return body[:n], nil
	}
	return payload, nil
}

// sm3Blocks is the number of SM3 compressions HMAC's inner hash runs
// over a record of n plaintext bytes: the key block, 13 header bytes,
// the data, and SM3's padding (0x80 and the 8-byte length).
func sm3Blocks(n int) int { return (64 + 13 + n + 9 + 63) / 64 }

var zeroBlocks [5 * 64]byte

// equalize runs the SM3 compressions that a MAC over maxN bytes would
// have run beyond one over n bytes (at most 5: padding is 1..256 bytes).
func (h *halfConn) equalize(n, maxN int) {
	extra := sm3Blocks(maxN) - sm3Blocks(n)
	if h.dummy == nil {
		h.dummy = sm3.New()
	}
	h.dummy.Reset()
	h.dummy.Write(zeroBlocks[:extra*64])
}

// cbcPadding returns the number of padding bytes at the end of body
// (the length byte included) and 1 when they are well-formed, in time
// independent of their values (crypto/tls's method). body holds at least
// macSize+1 bytes; a bad padding reports 0 bytes, so the MAC still runs.
func cbcPadding(body []byte) (toRemove int, good int) {
	last := len(body) - 1
	padLen := int(body[last])
	// The padding may not eat into the MAC.
	goodInt := subtle.ConstantTimeLessOrEq(padLen+1, len(body)-macSize)
	// Check up to 256 bytes (the most a padding can be), in constant time.
	toCheck := 256
	if toCheck > len(body) {
		toCheck = len(body)
	}
	for i := 0; i < toCheck; i++ {
		t := uint(padLen) - uint(i)
		// mask is 0xff if i <= padLen.
		mask := byte(int32(^t) >> 31)
		b := body[last-i]
		goodInt &= subtle.ConstantTimeByteEq(b&mask, byte(padLen)&mask)
	}
	toRemove = subtle.ConstantTimeSelect(goodInt, padLen+1, 0)
	return toRemove, goodInt
}

// recordLen parses a record header: its type and payload length, or an
// error when it cannot be a TLCP record.
func recordLen(hdr []byte) (typ byte, n int, err error) {
	typ = hdr[0]
	if typ < recordChangeCipherSpec || typ > recordApplicationData {
		return 0, 0, errors.New("tlcp: not a TLCP record")
	}
	if binary.BigEndian.Uint16(hdr[1:3]) != VersionTLCP {
		return 0, 0, errors.New("tlcp: record version is not TLCP's 0x0101")
	}
	n = int(binary.BigEndian.Uint16(hdr[3:5]))
	if n > maxCiphertext {
		return 0, 0, errRecordLength
	}
	return typ, n, nil
}
