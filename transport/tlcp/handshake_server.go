package tlcp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"io"
	"slices"

	"github.com/emmansun/gmsm/ecdh"
	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
)

// serverHandshake runs the server side (GB/T 38636 6.4.5).
func (c *Conn) serverHandshake() error {
	cfg := c.cfg
	if cfg.SignCert == nil || cfg.EncCert == nil {
		return fail(alertInternalError, "a server needs a signing and an encryption certificate")
	}
	msg, err := c.readHandshake(typeClientHello)
	if err != nil {
		return err
	}
	var ch clientHello
	if err := ch.unmarshal(msg[4:]); err != nil {
		return &localError{alertDecodeError, err}
	}
	if ch.vers != VersionTLCP {
		return fail(alertProtocolVersion, "the client offers version 0x%04x, not TLCP", ch.vers)
	}
	c.serverName = ch.serverName
	// The client's session, if the cache has it and the client still
	// offers its suite.
	if s := cfg.Sessions.get(string(ch.sessionID), cfg.now()); len(ch.sessionID) > 0 && s != nil && slices.Contains(ch.suites, s.suite) && slices.Contains(cfg.suites(), s.suite) {
		return c.serverResume(&ch, s)
	}
	var chosen *suite
	for _, id := range cfg.suites() {
		s := suiteByID(id)
		if s == nil || !slices.Contains(ch.suites, id) || s.ecdhe && cfg.ClientAuth == NoClientCert {
			continue
		}
		chosen = s
		break
	}
	if chosen == nil {
		return fail(alertHandshakeFailure, "no cipher suite in common")
	}
	c.suite = chosen
	serverRandom := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, serverRandom); err != nil {
		return err
	}
	var sessionID []byte
	if cfg.Sessions != nil {
		sessionID = make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, sessionID); err != nil {
			return err
		}
	}
	c.writeHandshake((&serverHello{vers: VersionTLCP, random: serverRandom, sessionID: sessionID, suite: chosen.id}).marshal())
	certs := certificateList(cfg.SignCert, cfg.EncCert)
	c.writeHandshake((&certificateMsg{certs: certs}).marshal())

	// ServerKeyExchange: signed by the signing key.
	var eph *ecdh.PrivateKey
	var signed, params []byte
	if chosen.ecdhe {
		if eph, err = ecdh.P256().GenerateKey(rand.Reader); err != nil {
			return err
		}
		params = ecdheParams(eph.PublicKey().Bytes())
		signed = concat(ch.random, serverRandom, params)
	} else {
		signed = concat(ch.random, serverRandom, len24(cfg.EncCert.Chain[0]))
	}
	sig, err := cfg.SignCert.Key.Sign(rand.Reader, signed, sm2.DefaultSM2SignerOpts)
	if err != nil {
		return fail(alertInternalError, "signing the key exchange: %v", err)
	}
	c.writeHandshake(message(typeServerKeyExchange, func(b *cryptobyte.Builder) {
		b.AddBytes(params)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sig) })
	}))
	if cfg.ClientAuth != NoClientCert {
		req := &certificateRequest{types: []byte{certTypeECDSASign}}
		if cfg.ClientCAs != nil {
			req.cas = cfg.ClientCAs.Subjects()
		}
		c.writeHandshake(req.marshal())
	}
	c.writeHandshake(message(typeServerHelloDone, func(*cryptobyte.Builder) {}))
	if err := c.flush(); err != nil {
		return err
	}

	// The client's flight.
	if cfg.ClientAuth != NoClientCert {
		msg, err := c.readHandshake(typeCertificate)
		if err != nil {
			return err
		}
		var cm certificateMsg
		if err := cm.unmarshal(msg[4:]); err != nil {
			return &localError{alertDecodeError, err}
		}
		if len(cm.certs) == 0 && (cfg.ClientAuth == RequireAndVerifyClientCert || chosen.ecdhe) {
			return fail(alertBadCertificate, "the client sent no certificate")
		}
		if len(cm.certs) > 0 {
			if c.peer, err = c.verifyPeer(cm.certs, cfg.ClientCAs, "", smx509.ExtKeyUsageClientAuth, chosen.ecdhe, chosen.ecdhe); err != nil {
				return err
			}
		}
	}
	msg, err = c.readHandshake(typeClientKeyExchange)
	if err != nil {
		return err
	}
	var premaster []byte
	if chosen.ecdhe {
		premaster, err = c.serverECDHE(msg[4:], eph)
	} else {
		premaster, err = c.serverECC(msg[4:])
	}
	if err != nil {
		return err
	}
	if len(c.peer) > 0 {
		// CertificateVerify: the client's signature over the transcript
		// so far.
		digest := c.transcript.Sum(nil)
		msg, err := c.readHandshake(typeCertificateVerify)
		if err != nil {
			return err
		}
		sig, err := readOpaque16(msg[4:])
		if err != nil {
			return &localError{alertDecodeError, err}
		}
		if !sm2.VerifyASN1WithSM2(c.peer[0].PublicKey.(*ecdsa.PublicKey), nil, digest, sig) {
			return fail(alertDecryptError, "the client's CertificateVerify signature does not verify")
		}
	}
	c.master = masterSecret(premaster, ch.random, serverRandom)
	c.setKeys(ch.random, serverRandom)
	if err := c.readFinished("client finished"); err != nil {
		return err
	}
	if err := c.writeFinished("server finished"); err != nil {
		return err
	}
	if len(sessionID) > 0 {
		cfg.Sessions.put(string(sessionID), &session{id: sessionID, suite: chosen.id, master: c.master, peer: c.peer, created: cfg.now()})
	}
	return nil
}

// serverResume runs the abbreviated handshake for a cached session.
func (c *Conn) serverResume(ch *clientHello, s *session) error {
	c.suite, c.resumed, c.peer = suiteByID(s.suite), true, s.peer
	serverRandom := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, serverRandom); err != nil {
		return err
	}
	c.writeHandshake((&serverHello{vers: VersionTLCP, random: serverRandom, sessionID: s.id, suite: s.suite}).marshal())
	c.master = s.master
	c.setKeys(ch.random, serverRandom)
	if err := c.writeFinished("server finished"); err != nil {
		return err
	}
	return c.readFinished("client finished")
}

// serverECC opens the premaster secret the client encrypted to the
// encryption certificate. Any failure goes on with a random premaster,
// so the Finished check fails the same way for every bad input (no
// decryption oracle).
func (c *Conn) serverECC(body []byte) ([]byte, error) {
	ct, err := readOpaque16(body)
	if err != nil {
		return nil, &localError{alertDecodeError, err}
	}
	random := make([]byte, 48)
	if _, err := io.ReadFull(rand.Reader, random); err != nil {
		return nil, err
	}
	// emmansun's ASN.1 decryption refuses bytes after the SEQUENCE.
	if s := cryptobyte.String(ct); len(ct) > 0 {
		var seq cryptobyte.String
		if s.ReadASN1Element(&seq, 0x30) {
			ct = seq
		}
	}
	pm, err := c.cfg.EncCert.Key.Decrypt(nil, ct, sm2.ASN1DecrypterOpts)
	ok := 0
	if err == nil && len(pm) == 48 {
		ok = subtle.ConstantTimeByteEq(pm[0], VersionTLCP>>8) & subtle.ConstantTimeByteEq(pm[1], VersionTLCP&0xff)
	} else {
		pm = make([]byte, 48)
	}
	subtle.ConstantTimeCopy(1-ok, pm, random)
	return pm, nil
}

// serverECDHE computes the premaster secret by the SM2 key exchange
// (GB/T 35276), the server as its initiator: its static key is the
// encryption key, the client's the encryption certificate's.
func (c *Conn) serverECDHE(body []byte, eph *ecdh.PrivateKey) ([]byte, error) {
	point, err := parseClientECDHE(body)
	if err != nil {
		return nil, &localError{alertDecodeError, err}
	}
	return sm2Exchange(false, c.cfg.EncCert.Key, eph, c.peer[1], point)
}

// sm2Exchange is the SM2 key exchange's 48 bytes of shared key.
func sm2Exchange(responder bool, static *sm2.PrivateKey, eph *ecdh.PrivateKey, peer *smx509.Certificate, peerPoint []byte) ([]byte, error) {
	peerEph, err := ecdh.P256().NewPublicKey(peerPoint)
	if err != nil {
		return nil, fail(alertIllegalParameter, "the peer's ECDHE point: %v", err)
	}
	pub, ok := peer.PublicKey.(*ecdsa.PublicKey)
	if !ok || !sm2.IsSM2PublicKey(pub) {
		return nil, fail(alertUnsupportedCert, "the peer's encryption certificate has no SM2 key")
	}
	peerStatic, err := sm2.PublicKeyToECDH(pub)
	if err != nil {
		return nil, fail(alertUnsupportedCert, "the peer's encryption key: %v", err)
	}
	ownStatic, err := static.ECDH()
	if err != nil {
		return nil, fail(alertInternalError, "the encryption key: %v", err)
	}
	uv, err := ownStatic.SM2MQV(eph, peerStatic, peerEph)
	if err != nil {
		return nil, fail(alertHandshakeFailure, "SM2 key exchange: %v", err)
	}
	k, err := uv.SM2SharedKey(responder, masterSecretLength, ownStatic.PublicKey(), peerStatic, nil, nil)
	if err != nil {
		return nil, fail(alertHandshakeFailure, "SM2 key exchange: %v", err)
	}
	return k, nil
}

// setKeys derives the record keys from the master secret; they take over
// at each direction's ChangeCipherSpec.
func (c *Conn) setKeys(clientRandom, serverRandom []byte) {
	cMAC, sMAC, cKey, sKey, cIV, sIV := keys(c.suite, c.master, clientRandom, serverRandom)
	client, server := newHalf(c.suite, cMAC, cKey, cIV), newHalf(c.suite, sMAC, sKey, sIV)
	if c.isClient {
		c.out.next, c.in.next = client, server
	} else {
		c.out.next, c.in.next = server, client
	}
}

// writeFinished sends ChangeCipherSpec and Finished, and the flight.
func (c *Conn) writeFinished(label string) error {
	if err := c.writeChangeCipherSpec(); err != nil {
		return err
	}
	c.writeHandshake(message(typeFinished, func(b *cryptobyte.Builder) {
		b.AddBytes(finishedSum(c.master, label, c.transcript))
	}))
	return c.flush()
}

// readFinished reads the peer's ChangeCipherSpec and Finished.
func (c *Conn) readFinished(label string) error {
	if err := c.readChangeCipherSpec(); err != nil {
		return err
	}
	want := finishedSum(c.master, label, c.transcript)
	msg, err := c.readHandshake(typeFinished)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(msg[4:], want) != 1 {
		return fail(alertDecryptError, "the peer's Finished does not verify")
	}
	return nil
}

// verifyPeer parses and verifies the peer's certificates, as sent: the
// signing certificate, then the encryption certificate (required when
// needEnc; from a client that has none, the next one may already be an
// intermediate CA), then intermediates. It returns the leaves: the
// signing certificate, and the encryption certificate when there is one.
// Each leaf must chain to roots (unless a client skips verification),
// be no CA, and carry its role's key usage: digitalSignature for
// signing; keyEncipherment (ECC) or keyAgreement (ECDHE) for encryption;
// and the two must be distinct keys (the encryption key is escrowed in
// the GM PKI, so it must never pass for the signing one). name, when
// set, must be the signing certificate's.
func (c *Conn) verifyPeer(ders [][]byte, roots *smx509.CertPool, name string, usage smx509.ExtKeyUsage, ecdhe, needEnc bool) ([]*smx509.Certificate, error) {
	certs := make([]*smx509.Certificate, len(ders))
	for i, d := range ders {
		cert, err := smx509.ParseCertificate(d)
		if err != nil {
			return nil, fail(alertBadCertificate, "peer certificate %d: %v", i, err)
		}
		certs[i] = cert
	}
	leaves := certs[:1]
	if len(certs) > 1 && (needEnc || !certs[1].IsCA) {
		leaves = certs[:2]
	}
	if needEnc && len(leaves) < 2 {
		return nil, fail(alertBadCertificate, "the peer sent no encryption certificate")
	}
	for i, cert := range leaves {
		pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
		if !ok || !sm2.IsSM2PublicKey(pub) {
			return nil, fail(alertUnsupportedCert, "peer certificate %d has no SM2 key", i)
		}
		if cert.IsCA {
			return nil, fail(alertBadCertificate, "peer certificate %d is a CA certificate", i)
		}
		var want smx509.KeyUsage
		role := "signing"
		switch {
		case i == 0:
			want = smx509.KeyUsageDigitalSignature
		case ecdhe:
			want, role = smx509.KeyUsageKeyAgreement, "encryption (key agreement)"
		default:
			want, role = smx509.KeyUsageKeyEncipherment, "encryption"
		}
		// A certificate without the key usage extension may serve any
		// purpose (RFC 5280 4.2.1.3).
		if cert.KeyUsage != 0 && cert.KeyUsage&want == 0 {
			return nil, fail(alertBadCertificate, "peer certificate %d cannot serve as the %s certificate (key usage)", i, role)
		}
	}
	if len(leaves) == 2 && leaves[0].PublicKey.(*ecdsa.PublicKey).Equal(leaves[1].PublicKey) {
		return nil, fail(alertBadCertificate, "the peer's signing and encryption certificates have the same key")
	}
	if c.cfg.InsecureSkipVerify && c.isClient {
		return leaves, c.runVerifyPeer(leaves)
	}
	if roots == nil {
		return nil, fail(alertUnknownCA, "no trusted CA to verify the peer's certificate")
	}
	inter := smx509.NewCertPool()
	for _, cert := range certs[len(leaves):] {
		inter.AddCert(cert)
	}
	for i, cert := range leaves {
		opts := smx509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: c.cfg.now(),
			KeyUsages: []smx509.ExtKeyUsage{usage}}
		if i == 0 {
			opts.DNSName = name
		}
		if _, err := cert.Verify(opts); err != nil {
			return nil, fail(alertBadCertificate, "peer certificate %d: %v", i, err)
		}
	}
	return leaves, c.runVerifyPeer(leaves)
}

func (c *Conn) runVerifyPeer(certs []*smx509.Certificate) error {
	if c.cfg.VerifyPeer == nil {
		return nil
	}
	if err := c.cfg.VerifyPeer(certs); err != nil {
		return &localError{alertBadCertificate, err}
	}
	return nil
}

const alertIllegalParameter = 47

// certificateList is what a Certificate message carries: the signing
// certificate, the encryption certificate (if any), then the
// intermediates of both, each once (the encryption certificate may come
// from another issuer, such as a key-management centre's).
func certificateList(sign, enc *Certificate) [][]byte {
	out := [][]byte{sign.Chain[0]}
	if enc != nil {
		out = append(out, enc.Chain[0])
	}
	seen := map[string]bool{}
	for _, c := range []*Certificate{sign, enc} {
		if c == nil {
			continue
		}
		for _, der := range c.Chain[1:] {
			if !seen[string(der)] {
				seen[string(der)] = true
				out = append(out, der)
			}
		}
	}
	return out
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// len24 is b with its 24-bit length in front (the encryption certificate
// as ECC's ServerKeyExchange signs it).
func len24(b []byte) []byte {
	return append([]byte{byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...)
}
