package tlcp

import (
	"crypto/hmac"
	"hash"

	"github.com/emmansun/gmsm/sm3"
)

// prf is TLS 1.2's PRF with HMAC-SM3 (GB/T 38636 6.5.2.2): P_SM3(secret,
// label + seed), len(out) bytes.
func prf(out, secret []byte, label string, seed ...[]byte) {
	h := hmac.New(sm3.New, secret)
	var a []byte // A(i)
	{
		h.Write([]byte(label))
		for _, s := range seed {
			h.Write(s)
		}
		a = h.Sum(nil)
	}
	for len(out) > 0 {
		h.Reset()
		h.Write(a)
		h.Write([]byte(label))
		for _, s := range seed {
			h.Write(s)
		}
		b := h.Sum(nil)
		n := copy(out, b)
		out = out[n:]
		h.Reset()
		h.Write(a)
		a = h.Sum(a[:0])
	}
}

const (
	masterSecretLength = 48
	finishedLength     = 12
)

// masterSecret derives the master secret from the premaster secret.
func masterSecret(premaster, clientRandom, serverRandom []byte) []byte {
	m := make([]byte, masterSecretLength)
	prf(m, premaster, "master secret", clientRandom, serverRandom)
	return m
}

// keys cuts the key block: client and server MAC keys, cipher keys, IVs.
func keys(s *suite, master, clientRandom, serverRandom []byte) (cMAC, sMAC, cKey, sKey, cIV, sIV []byte) {
	ml, kl, il := s.keyLengths()
	b := make([]byte, 2*(ml+kl+il))
	prf(b, master, "key expansion", serverRandom, clientRandom)
	cut := func(n int) []byte { r := b[:n:n]; b = b[n:]; return r }
	return cut(ml), cut(ml), cut(kl), cut(kl), cut(il), cut(il)
}

// finishedSum is a Finished message's verify_data over the transcript's
// SM3 hash.
func finishedSum(master []byte, label string, transcript hash.Hash) []byte {
	out := make([]byte, finishedLength)
	prf(out, master, label, transcript.Sum(nil))
	return out
}
