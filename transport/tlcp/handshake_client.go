package tlcp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"io"
	"net"
	"slices"

	"github.com/emmansun/gmsm/ecdh"
	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
)

// sessionKey is a client's cache key: the server name and address.
func (c *Conn) sessionKey() string {
	return c.cfg.ServerName + "|" + c.conn.RemoteAddr().String()
}

// clientHandshake runs the client side.
func (c *Conn) clientHandshake() error {
	cfg := c.cfg
	clientRandom := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, clientRandom); err != nil {
		return err
	}
	// The ECDHE suites need both client certificates: without them, they
	// are not offered (a server could pick one and the handshake fail
	// where an ECC suite would do).
	var offered []uint16
	for _, id := range cfg.suites() {
		if s := suiteByID(id); s != nil && (!s.ecdhe || cfg.SignCert != nil && cfg.EncCert != nil) {
			offered = append(offered, id)
		}
	}
	if len(offered) == 0 {
		return fail(alertInternalError, "no suite to offer: the ECDHE suites need a signing and an encryption certificate")
	}
	cached := cfg.Sessions.get(c.sessionKey(), cfg.now())
	ch := &clientHello{vers: VersionTLCP, random: clientRandom, suites: offered}
	if cached != nil {
		ch.sessionID = cached.id
	}
	if net.ParseIP(cfg.ServerName) == nil {
		ch.serverName = cfg.ServerName
	}
	c.serverName = cfg.ServerName
	c.writeHandshake(ch.marshal())
	if err := c.flush(); err != nil {
		return err
	}
	msg, err := c.readHandshake(typeServerHello)
	if err != nil {
		return err
	}
	var sh serverHello
	if err := sh.unmarshal(msg[4:]); err != nil {
		return &localError{alertDecodeError, err}
	}
	if sh.vers != VersionTLCP {
		return fail(alertProtocolVersion, "the server answers version 0x%04x, not TLCP", sh.vers)
	}
	c.suite = suiteByID(sh.suite)
	if c.suite == nil || !slices.Contains(offered, sh.suite) {
		return fail(alertHandshakeFailure, "the server chose a suite not offered (0x%04x)", sh.suite)
	}
	if cached != nil && len(sh.sessionID) > 0 && bytes.Equal(sh.sessionID, cached.id) {
		if sh.suite != cached.suite {
			return fail(alertIllegalParameter, "the server resumed with another suite")
		}
		c.resumed, c.peer, c.master = true, cached.peer, cached.master
		c.setKeys(clientRandom, sh.random)
		if err := c.readFinished("server finished"); err != nil {
			return err
		}
		return c.writeFinished("client finished")
	}

	// Certificate: signing, encryption, chain.
	msg, err = c.readHandshake(typeCertificate)
	if err != nil {
		return err
	}
	var cm certificateMsg
	if err := cm.unmarshal(msg[4:]); err != nil {
		return &localError{alertDecodeError, err}
	}
	if c.peer, err = c.verifyPeer(cm.certs, cfg.RootCAs, cfg.ServerName, smx509.ExtKeyUsageServerAuth, c.suite.ecdhe, true); err != nil {
		return err
	}
	signPub := c.peer[0].PublicKey.(*ecdsa.PublicKey)
	encPub := c.peer[1].PublicKey.(*ecdsa.PublicKey)

	// ServerKeyExchange.
	msg, err = c.readHandshake(typeServerKeyExchange)
	if err != nil {
		return err
	}
	body := cryptobyte.String(msg[4:])
	var signed, serverPoint []byte
	if c.suite.ecdhe {
		start := body
		if serverPoint, err = readECDHEParams(&body); err != nil {
			return &localError{alertDecodeError, err}
		}
		signed = concat(clientRandom, sh.random, start[:len(start)-len(body)])
	} else {
		signed = concat(clientRandom, sh.random, len24(cm.certs[1]))
	}
	var sig []byte
	if !readUint16Bytes(&body, &sig) || !body.Empty() {
		return fail(alertDecodeError, "malformed ServerKeyExchange")
	}
	if !sm2.VerifyASN1WithSM2(signPub, nil, signed, sig) {
		return fail(alertDecryptError, "the ServerKeyExchange signature does not verify")
	}

	// CertificateRequest, ServerHelloDone.
	typ, err := c.peekHandshake()
	if err != nil {
		return err
	}
	certRequested := typ == typeCertificateRequest
	if certRequested {
		msg, err := c.readHandshake(typeCertificateRequest)
		if err != nil {
			return err
		}
		var req certificateRequest
		if err := req.unmarshal(msg[4:]); err != nil {
			return &localError{alertDecodeError, err}
		}
	}
	if msg, err = c.readHandshake(typeServerHelloDone); err != nil {
		return err
	}
	if len(msg) != 4 {
		return fail(alertDecodeError, "malformed ServerHelloDone")
	}
	if c.suite.ecdhe && (!certRequested || cfg.SignCert == nil || cfg.EncCert == nil) {
		return fail(alertHandshakeFailure, "an ECDHE suite needs client certificates (signing and encryption)")
	}

	// The client's flight.
	sendCert := certRequested && cfg.SignCert != nil
	if certRequested {
		var certs [][]byte
		if sendCert {
			certs = certificateList(cfg.SignCert, cfg.EncCert)
		}
		c.writeHandshake((&certificateMsg{certs: certs}).marshal())
	}
	var premaster []byte
	if c.suite.ecdhe {
		eph, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		if premaster, err = sm2Exchange(true, cfg.EncCert.Key, eph, c.peer[1], serverPoint); err != nil {
			return err
		}
		c.writeHandshake(message(typeClientKeyExchange, func(b *cryptobyte.Builder) {
			b.AddBytes(ecdheParams(eph.PublicKey().Bytes()))
		}))
	} else {
		premaster = make([]byte, 48)
		premaster[0], premaster[1] = VersionTLCP>>8, VersionTLCP&0xff
		if _, err := io.ReadFull(rand.Reader, premaster[2:]); err != nil {
			return err
		}
		ct, err := sm2.Encrypt(rand.Reader, encPub, premaster, sm2.ASN1EncrypterOpts)
		if err != nil {
			return fail(alertInternalError, "encrypting the premaster secret: %v", err)
		}
		c.writeHandshake(opaque16(typeClientKeyExchange, ct))
	}
	if sendCert {
		sig, err := cfg.SignCert.Key.Sign(rand.Reader, c.transcript.Sum(nil), sm2.DefaultSM2SignerOpts)
		if err != nil {
			return fail(alertInternalError, "signing CertificateVerify: %v", err)
		}
		c.writeHandshake(opaque16(typeCertificateVerify, sig))
	}
	c.master = masterSecret(premaster, clientRandom, sh.random)
	c.setKeys(clientRandom, sh.random)
	if err := c.writeFinished("client finished"); err != nil {
		return err
	}
	if err := c.readFinished("server finished"); err != nil {
		return err
	}
	if len(sh.sessionID) > 0 {
		cfg.Sessions.put(c.sessionKey(), &session{id: sh.sessionID, suite: sh.suite, master: c.master, peer: c.peer, created: cfg.now()})
	}
	return nil
}
