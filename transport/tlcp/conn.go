package tlcp

import (
	gotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"
)

// Alert descriptions (RFC 5246 7.2, GB/T 38636 6.4.4).
const (
	alertCloseNotify        = 0
	alertUnexpectedMessage  = 10
	alertBadRecordMAC       = 20
	alertRecordOverflow     = 22
	alertHandshakeFailure   = 40
	alertBadCertificate     = 42
	alertUnsupportedCert    = 43
	alertCertificateExpired = 45
	alertUnknownCA          = 48
	alertDecodeError        = 50
	alertDecryptError       = 51
	alertProtocolVersion    = 70
	alertInternalError      = 80
	alertNoRenegotiation    = 100
)

// AlertError is a fatal alert the peer sent.
type AlertError uint8

func (e AlertError) Error() string { return fmt.Sprintf("tlcp: remote error: alert %d", uint8(e)) }

// localError is an error this side found, with the alert it sends.
type localError struct {
	alert uint8
	err   error
}

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func fail(alert uint8, format string, args ...any) error {
	return &localError{alert: alert, err: fmt.Errorf("tlcp: "+format, args...)}
}

// rawPool holds record input buffers: taken while a connection reads,
// given back when it has nothing buffered (an idle connection holds
// none).
var rawPool = sync.Pool{New: func() any { b := make([]byte, recordHeaderLen+maxCiphertext); return &b }}

// Conn is a TLCP connection over a net.Conn, in the manner of
// crypto/tls.Conn: the handshake runs on the first Read or Write (or
// Handshake). A Read whose underlying read fails with a temporary error
// keeps what it has and may be called again.
type Conn struct {
	conn     net.Conn
	cfg      *Config
	isClient bool

	hsMu       sync.Mutex
	hsDone     atomic.Bool
	hsErr      error
	transcript hash.Hash
	pendingHS  []byte // handshake messages not yet sealed

	// The negotiated session (set by the handshake).
	suite      *suite
	resumed    bool
	serverName string
	peer       []*smx509.Certificate
	master     []byte

	inMu    sync.Mutex
	in      halfConn
	rawBuf  *[]byte // pooled; nil when nothing is buffered
	rawOff  int     // rawBuf[rawOff:rawEnd] is read but not yet processed
	rawEnd  int
	input   []byte // application data decrypted and not yet returned
	hand    []byte // handshake bytes not yet a whole message
	readErr error  // permanent
	// uselessRecords counts records in a row that carried nothing.
	uselessRecords int

	outMu   sync.Mutex
	out     halfConn
	outBuf  []byte
	wrErr   error
	closing bool // close_notify sent
}

// Server returns the server side of a TLCP connection over c.
func Server(c net.Conn, cfg *Config) *Conn {
	return &Conn{conn: c, cfg: cfg}
}

// Client returns the client side of a TLCP connection over c.
func Client(c net.Conn, cfg *Config) *Conn {
	return &Conn{conn: c, cfg: cfg, isClient: true}
}

// Handshake runs the handshake if it has not run; it returns its
// outcome.
func (c *Conn) Handshake() error {
	if c.hsDone.Load() {
		return nil
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsErr != nil || c.hsDone.Load() {
		return c.hsErr
	}
	c.transcript = sm3.New()
	var err error
	if c.isClient {
		err = c.clientHandshake()
	} else {
		err = c.serverHandshake()
	}
	c.transcript, c.pendingHS, c.outBuf = nil, nil, nil
	if err != nil {
		var le *localError
		if errors.As(err, &le) {
			c.sendAlert(le.alert)
		}
		c.hsErr = err
		return err
	}
	c.hsDone.Store(true)
	return nil
}

// Read reads application data.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	for len(c.input) == 0 {
		if err := c.readRecord(recordApplicationData); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.input)
	c.input = c.input[n:]
	c.release()
	return n, nil
}

// release gives the input buffer back when nothing in it is pending.
func (c *Conn) release() {
	if len(c.input) == 0 && c.rawOff == c.rawEnd && c.rawBuf != nil {
		rawPool.Put(c.rawBuf)
		c.rawBuf, c.rawOff, c.rawEnd, c.input = nil, 0, 0, nil
	}
}

// Write writes application data, in records of at most 16 KiB.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.wrErr != nil {
		return 0, c.wrErr
	}
	if c.closing {
		return 0, errors.New("tlcp: write after close_notify")
	}
	bp := outPool.Get().(*[]byte)
	defer outPool.Put(bp)
	n := 0
	for n < len(p) {
		// Seal up to 4 records per write to the socket.
		buf := (*bp)[:0]
		m := n
		for i := 0; i < 4 && m < len(p); i++ {
			end := min(len(p), m+maxPlaintext)
			var err error
			if buf, err = c.out.seal(buf, recordApplicationData, p[m:end]); err != nil {
				c.wrErr = err
				return n, err
			}
			m = end
		}
		*bp = buf[:0]
		if _, err := c.conn.Write(buf); err != nil {
			c.wrErr = err
			return n, err
		}
		n = m
	}
	return n, nil
}

// outPool holds write buffers of four whole records: a connection holds
// one only while it writes.
var outPool = sync.Pool{New: func() any { b := make([]byte, 0, 4*(recordHeaderLen+maxCiphertext)); return &b }}

// CloseWrite sends close_notify: the peer reads the end of the stream.
func (c *Conn) CloseWrite() error {
	if !c.hsDone.Load() {
		return errors.New("tlcp: CloseWrite before the handshake")
	}
	c.sendAlertWarning(alertCloseNotify)
	return nil
}

// Close sends close_notify (after a completed handshake) and closes the
// connection.
func (c *Conn) Close() error {
	if c.hsDone.Load() {
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.sendAlertWarning(alertCloseNotify)
	}
	return c.conn.Close()
}

func (c *Conn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// NetConn is the connection underneath.
func (c *Conn) NetConn() net.Conn { return c.conn }

// PeerCertificates are the peer's certificates as it sent them (for a
// server: signing, encryption, chain); empty before the handshake and
// for a client that sent none.
func (c *Conn) PeerCertificates() []*smx509.Certificate {
	if !c.hsDone.Load() {
		return nil
	}
	return c.peer
}

// ConnectionState reports the session in crypto/tls's form, as Strait's
// filters and logs read TLS sessions: Version is 0x0101, CipherSuite a
// TLCP suite, and PeerCertificates the peer's certificates with their
// names (SM2 keys as *ecdsa.PublicKey on the SM2 curve).
func (c *Conn) ConnectionState() gotls.ConnectionState {
	if !c.hsDone.Load() {
		return gotls.ConnectionState{}
	}
	cs := gotls.ConnectionState{Version: VersionTLCP, HandshakeComplete: true, DidResume: c.resumed,
		CipherSuite: c.suite.id, ServerName: c.serverName}
	for _, p := range c.peer {
		cs.PeerCertificates = append(cs.PeerCertificates, stdCert(p))
	}
	return cs
}

// stdCert carries an SM2 certificate's identity in crypto/x509's type
// (which cannot parse SM2 keys itself).
func stdCert(c *smx509.Certificate) *x509.Certificate {
	return &x509.Certificate{Raw: c.Raw, RawTBSCertificate: c.RawTBSCertificate,
		RawSubjectPublicKeyInfo: c.RawSubjectPublicKeyInfo, RawSubject: c.RawSubject, RawIssuer: c.RawIssuer,
		Version: c.Version, SerialNumber: c.SerialNumber, Issuer: c.Issuer, Subject: c.Subject,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, KeyUsage: x509.KeyUsage(c.KeyUsage),
		PublicKey: c.PublicKey, BasicConstraintsValid: c.BasicConstraintsValid, IsCA: c.IsCA,
		DNSNames: c.DNSNames, EmailAddresses: c.EmailAddresses, IPAddresses: c.IPAddresses, URIs: c.URIs}
}

// fill reads from the socket until n bytes are buffered from rawOff.
func (c *Conn) fill(n int) error {
	if c.rawBuf == nil {
		c.rawBuf = rawPool.Get().(*[]byte)
		c.rawOff, c.rawEnd = 0, 0
	}
	buf := *c.rawBuf
	if c.rawOff+n > len(buf) {
		// Move the partial record to the front (input is empty here).
		c.rawEnd = copy(buf, buf[c.rawOff:c.rawEnd])
		c.rawOff = 0
	}
	for c.rawEnd-c.rawOff < n {
		m, err := c.conn.Read(buf[c.rawEnd:])
		c.rawEnd += m
		if c.rawEnd-c.rawOff >= n {
			break
		}
		if err != nil {
			if err == io.EOF {
				// A FIN between records ends the stream as close_notify
				// does (crypto/tls does the same: the application's
				// framing tells truncation); inside a record it is an
				// error.
				if c.rawEnd != c.rawOff {
					err = errors.New("tlcp: the peer closed mid-record")
				}
				c.readErr = err
			} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				c.readErr = err
			}
			c.release()
			return err
		}
	}
	return nil
}

// readRecord reads and opens one record, expecting records of type want
// (handshake, change_cipher_spec or application data); alerts are
// handled here. inMu is held.
func (c *Conn) readRecord(want byte) error {
	if c.readErr != nil {
		return c.readErr
	}
	if err := c.fill(recordHeaderLen); err != nil {
		return err
	}
	buf := *c.rawBuf
	typ, n, err := recordLen(buf[c.rawOff : c.rawOff+recordHeaderLen])
	if err != nil {
		return c.inFail(alertProtocolVersion, err)
	}
	if !c.in.active() && n > maxPlaintext {
		return c.inFail(alertRecordOverflow, errRecordLength)
	}
	if err := c.fill(recordHeaderLen + n); err != nil {
		return err
	}
	buf = *c.rawBuf
	payload := buf[c.rawOff+recordHeaderLen : c.rawOff+recordHeaderLen+n]
	c.rawOff += recordHeaderLen + n
	data, err := c.in.open(typ, payload)
	if err != nil {
		return c.inFail(alertBadRecordMAC, err)
	}
	if len(data) > maxPlaintext {
		return c.inFail(alertRecordOverflow, errRecordLength)
	}
	switch typ {
	case recordAlert:
		if len(data) != 2 {
			return c.inFail(alertDecodeError, errors.New("tlcp: bad alert"))
		}
		if data[1] == alertCloseNotify {
			c.readErr = io.EOF
			c.release()
			return io.EOF
		}
		if data[0] == 2 { // fatal
			c.readErr = AlertError(data[1])
			return c.readErr
		}
		c.release()
		return c.useless() // a warning: go on
	case recordChangeCipherSpec:
		if want != recordChangeCipherSpec || len(data) != 1 || data[0] != 1 || len(c.hand) > 0 {
			return c.inFail(alertUnexpectedMessage, errors.New("tlcp: unexpected ChangeCipherSpec"))
		}
		if err := c.in.change(); err != nil {
			return c.inFail(alertUnexpectedMessage, err)
		}
		c.release()
		return nil
	case recordHandshake:
		if want != recordHandshake || len(data) == 0 {
			// No renegotiation.
			return c.inFail(alertNoRenegotiation, errors.New("tlcp: unexpected handshake message (no renegotiation)"))
		}
		c.hand = append(c.hand, data...)
		c.release()
		return nil
	case recordApplicationData:
		if want != recordApplicationData {
			return c.inFail(alertUnexpectedMessage, errors.New("tlcp: application data during the handshake"))
		}
		c.input = data
		if len(data) == 0 {
			c.release()
			return c.useless()
		}
		c.uselessRecords = 0
		return nil
	}
	return c.inFail(alertUnexpectedMessage, errors.New("tlcp: unknown record type"))
}

// maxUseless bounds the records in a row that carry nothing (empty
// application data, warning alerts), as crypto/tls does: a peer cannot
// keep a reader spinning.
const maxUseless = 16

func (c *Conn) useless() error {
	if c.uselessRecords++; c.uselessRecords > maxUseless {
		return c.inFail(alertUnexpectedMessage, errors.New("tlcp: too many empty records or warnings"))
	}
	return nil
}

// inFail makes a read error permanent and tells the peer.
func (c *Conn) inFail(alert uint8, err error) error {
	c.readErr = err
	c.sendAlert(alert)
	if c.rawBuf != nil {
		rawPool.Put(c.rawBuf)
		c.rawBuf, c.rawOff, c.rawEnd, c.input = nil, 0, 0, nil
	}
	return err
}

// readHandshake returns the next handshake message (header included),
// which must be of type want, and adds it to the transcript.
func (c *Conn) readHandshake(want byte) ([]byte, error) {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	for {
		if len(c.hand) >= 4 {
			n := int(c.hand[1])<<16 | int(c.hand[2])<<8 | int(c.hand[3])
			if n > 1<<16 {
				return nil, fail(alertDecodeError, "handshake message of %d bytes", n)
			}
			if len(c.hand) >= 4+n {
				msg := c.hand[: 4+n : 4+n]
				c.hand = c.hand[4+n:]
				if len(c.hand) == 0 {
					c.hand = nil
				}
				if msg[0] != want {
					return nil, fail(alertUnexpectedMessage, "handshake message %d, want %d", msg[0], want)
				}
				c.transcript.Write(msg)
				return msg, nil
			}
		}
		if err := c.readRecord(recordHandshake); err != nil {
			return nil, err
		}
	}
}

// peekHandshake reports the type of the next handshake message, reading
// until one is there.
func (c *Conn) peekHandshake() (byte, error) {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	for len(c.hand) == 0 {
		if err := c.readRecord(recordHandshake); err != nil {
			return 0, err
		}
	}
	return c.hand[0], nil
}

// readChangeCipherSpec reads ChangeCipherSpec: records are protected
// from then on.
func (c *Conn) readChangeCipherSpec() error {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	return c.readRecord(recordChangeCipherSpec)
}

// writeHandshake queues a handshake message and adds it to the
// transcript.
func (c *Conn) writeHandshake(msg []byte) {
	c.transcript.Write(msg)
	c.pendingHS = append(c.pendingHS, msg...)
}

// sealPending seals the queued handshake messages into out (outMu held).
func (c *Conn) sealPending() error {
	for p := c.pendingHS; len(p) > 0; {
		n := min(len(p), maxPlaintext)
		var err error
		if c.outBuf, err = c.out.seal(c.outBuf, recordHandshake, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	c.pendingHS = c.pendingHS[:0]
	return nil
}

// writeChangeCipherSpec queues ChangeCipherSpec after the pending
// messages and switches to the new keys.
func (c *Conn) writeChangeCipherSpec() error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if err := c.sealPending(); err != nil {
		return err
	}
	var err error
	if c.outBuf, err = c.out.seal(c.outBuf, recordChangeCipherSpec, []byte{1}); err != nil {
		return err
	}
	return c.out.change()
}

// flush writes the flight.
func (c *Conn) flush() error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if err := c.sealPending(); err != nil {
		return err
	}
	_, err := c.conn.Write(c.outBuf)
	c.outBuf = c.outBuf[:0]
	if err != nil {
		c.wrErr = err
	}
	return err
}

// sendAlert sends a fatal alert (best effort).
func (c *Conn) sendAlert(desc uint8) { c.alert(2, desc) }

func (c *Conn) sendAlertWarning(desc uint8) { c.alert(1, desc) }

func (c *Conn) alert(level, desc uint8) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.closing || c.wrErr != nil {
		return
	}
	if desc == alertCloseNotify {
		c.closing = true
	}
	var buf [recordHeaderLen + blockSize + 2 + macSize + blockSize]byte
	rec, err := c.out.seal(buf[:0], recordAlert, []byte{level, desc})
	if err != nil {
		return
	}
	if _, err := c.conn.Write(rec); err != nil {
		c.wrErr = err
	}
}
