package transport

import (
	gotls "crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/network"
)

// Session is a secure session over a net.Conn in crypto/tls.Conn's
// manner (crypto/tls's, TLCP's): Read and Write run the handshake first
// if Handshake has not; a Read whose underlying read fails with a
// temporary error keeps what it has and may be called again.
type Session interface {
	Handshake() error
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	CloseWrite() error
	ConnectionState() gotls.ConnectionState
}

// A session under an I/O model whose readers read the socket themselves
// (epoll): the session reads ciphertext from an inbox the connection's
// reader fills, and never blocks that reader.
//
//   - The handshake runs on its own goroutine (bounded by
//     the filter chain's transport_socket_connect_timeout, default 10 s),
//     whose reads wait on the inbox; the connection's
//     reader only copies bytes into it. When the handshake is done, the
//     goroutine ends and the reader is kicked to decrypt what came
//     meanwhile.
//   - After it, the reader decrypts on its own goroutine: a read with the
//     inbox empty returns a temporary "would block" error, which the session
//     does not keep (a partial record waits in the session for the rest).
//   - Plaintext the inner handler leaves (it paused, or wants more) is
//     kept and offered again with more, or on ResumeRead (Pending).
//   - Writes encrypt on the writer's goroutine and write the socket.
//   - Idle, a connection holds no goroutine and no inbox or plaintext
//     buffer; the session keeps its own record buffers.

// NewNonBlocking runs the server session that server makes over c's
// socket as c's transport socket: the handshake must be done within
// timeout of the accept (a client that never speaks included); done
// hears its outcome.
func NewNonBlocking(c *network.Conn, timeout time.Duration, server func(net.Conn) Session, done func(Session, error)) Socket {
	t := &nbSocket{c: c, raw: c.Socket(), done: done}
	t.cond = sync.NewCond(&t.mu)
	t.tc = server(&nbAdapter{t: t})
	t.timer = time.AfterFunc(timeout, t.expire)
	return t
}

// expire ends a handshake that ran out of time: its reads fail and the
// connection closes (a handshake blocked writing to a peer that does not
// read is woken by the close).
func (t *nbSocket) expire() {
	t.mu.Lock()
	if t.state == nbEstablished || t.state == nbFailed {
		t.mu.Unlock()
		return
	}
	t.deadline = true
	t.cond.Broadcast()
	t.mu.Unlock()
	t.c.Close()
}

// The states of an nbSocket.
const (
	nbNew = iota
	nbHandshaking
	nbEstablished
	nbFailed
)

// maxHandshakeInbox is the ciphertext taken while the handshake runs;
// past it reading pauses until the handshake is done.
const maxHandshakeInbox = 64 << 10

// errWouldBlock is what the adapter's Read returns when the inbox is
// empty after the handshake: temporary, so the session does not keep it.
var errWouldBlock = &wouldBlock{}

type wouldBlock struct{}

func (*wouldBlock) Error() string   { return "transport socket: no ciphertext yet" }
func (*wouldBlock) Timeout() bool   { return true }
func (*wouldBlock) Temporary() bool { return true }

type nbSocket struct {
	done  func(Session, error)
	c     *network.Conn
	raw   network.Socket
	tc    Session
	inner network.Handler

	timer *time.Timer // the handshake's deadline

	mu      sync.Mutex
	cond    *sync.Cond // state changes, inbox growth, close
	state   int
	inbox   []byte // ciphertext the session has not read
	plain   []byte // plaintext the inner handler left
	eof     bool   // the peer closed its side
	eofSent bool   // the inner handler heard OnEOF (once)
	heldOff bool   // reading paused while the handshake catches up
	// unread: the session may hold whole records not decrypted yet (the
	// last pump stopped for a pause, not for want of ciphertext).
	unread   bool
	closed   bool
	deadline bool // the handshake's time ran out
}

// SetInner implements transport.Socket.
func (t *nbSocket) SetInner(h network.Handler) { t.inner = h }

// OnRead takes ciphertext from the connection's reader.
func (t *nbSocket) OnRead(data []byte) int {
	t.mu.Lock()
	switch t.state {
	case nbFailed:
		t.mu.Unlock()
		return len(data)
	case nbNew, nbHandshaking:
		t.inbox = append(t.inbox, data...)
		if t.state == nbNew {
			t.state = nbHandshaking
			go t.handshake()
		}
		// A client may stream right after its Finished, while the
		// handshake goroutine still works: hold off reading meanwhile.
		full := len(t.inbox) > maxHandshakeInbox && !t.heldOff
		t.heldOff = t.heldOff || full
		t.cond.Broadcast()
		t.mu.Unlock()
		if full {
			t.c.PauseRead()
		}
		return len(data)
	}
	t.inbox = append(t.inbox, data...)
	t.unread = true
	t.mu.Unlock()
	t.pump()
	return len(data)
}

// handshake runs the server handshake on its own goroutine.
func (t *nbSocket) handshake() {
	err := t.tc.Handshake()
	t.timer.Stop()
	if t.done != nil {
		t.done(t.tc, err)
	}
	t.mu.Lock()
	t.cond.Broadcast() // OnEOF and early writers wait for the outcome
	if err != nil {
		t.state = nbFailed
		t.inbox = nil
		t.mu.Unlock()
		t.c.Close()
		return
	}
	t.state = nbEstablished
	t.unread = true
	if len(t.inbox) == 0 {
		t.inbox = nil
	}
	heldOff := t.heldOff
	t.heldOff = false
	t.mu.Unlock()
	if heldOff {
		t.c.ResumeRead() // Pending: the reader is kicked to decrypt
		return
	}
	// The reader decrypts what came during the handshake: the session may
	// hold whole records of it already, read along with the last
	// handshake message.
	t.c.Kick(t)
}

// pump decrypts and delivers on the reader's goroutine until the session
// wants more ciphertext, the inner handler paused, or the stream ended.
func (t *nbSocket) pump() {
	var bp *[]byte
	defer func() {
		if bp != nil {
			bufpool.Put(bp)
		}
	}()
	for !t.c.Closed() {
		t.mu.Lock()
		pending, done := len(t.plain), t.eofSent
		t.mu.Unlock()
		if done {
			return
		}
		if pending > 0 {
			if t.c.Paused() {
				return
			}
			n := t.inner.OnRead(t.plain)
			t.mu.Lock()
			t.plain = t.plain[n:]
			if len(t.plain) == 0 {
				t.plain = nil
			}
			t.mu.Unlock()
			if n > 0 {
				continue
			}
		}
		if t.c.Paused() {
			return // unread stays set: Pending asks for a kick on resume
		}
		if pending >= t.c.BufferLimit {
			// The handler left a whole buffer's worth and wants more
			// (as the models' own limit: a record may take it over by
			// up to 16 KiB, since records decrypt whole).
			t.c.Close()
			return
		}
		if bp == nil {
			bp = bufpool.Get(bufpool.Medium)
		}
		n, err := t.tc.Read(*bp)
		if n > 0 {
			t.mu.Lock()
			t.plain = append(t.plain, (*bp)[:n]...)
			t.mu.Unlock()
			continue
		}
		switch {
		case err == nil:
		case errors.Is(err, errWouldBlock):
			t.mu.Lock()
			t.unread = false
			t.mu.Unlock()
			return
		case errors.Is(err, io.EOF): // close_notify, or the peer's FIN
			t.sendEOF()
			return
		default:
			t.c.Close()
			return
		}
	}
}

// sendEOF tells the inner handler, once, that the stream ended.
func (t *nbSocket) sendEOF() {
	t.mu.Lock()
	sent := t.eofSent
	t.eofSent, t.unread = true, false
	t.mu.Unlock()
	if !sent {
		t.inner.OnEOF()
	}
}

// OnEOF: the peer closed TCP. A handshake under way finishes first (its
// last flight may have come with the FIN); then what was decrypted goes
// to the inner handler, then its OnEOF. (As for plaintext, bytes a paused
// handler left when the FIN came are not offered again.)
func (t *nbSocket) OnEOF() {
	t.mu.Lock()
	t.eof = true
	t.cond.Broadcast()
	for t.state == nbHandshaking {
		t.cond.Wait() // bounded: with eof set, the handshake cannot wait for more
	}
	established := t.state == nbEstablished
	t.mu.Unlock()
	if !established {
		t.c.Close()
		return
	}
	t.pump()
	t.sendEOF()
}

// OnClose reports the close to the inner handler.
func (t *nbSocket) OnClose(err error) {
	t.timer.Stop()
	t.mu.Lock()
	t.closed = true
	t.inbox, t.plain = nil, nil
	t.cond.Broadcast()
	t.mu.Unlock()
	if t.inner != nil {
		t.inner.OnClose(err)
	}
}

// Pending implements network.Transport.
func (t *nbSocket) Pending() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.plain) > 0 || (t.state == nbEstablished && !t.eofSent && (len(t.inbox) > 0 || t.unread))
}

// ConnectionState is the session (network.Conn.TLSState).
func (t *nbSocket) ConnectionState() gotls.ConnectionState { return t.tc.ConnectionState() }

// LocalCertificate is the certificate the session presented (nil when
// it does not say).
func (t *nbSocket) LocalCertificate() *x509.Certificate { return localCertificate(t.tc) }

// localCertificate asks a session for the certificate it presented.
func localCertificate(s Session) *x509.Certificate {
	if l, ok := s.(interface{ LocalCertificate() *x509.Certificate }); ok {
		return l.LocalCertificate()
	}
	return nil
}

// Write encrypts p and writes it to the socket. A write before the
// handshake is done (a server-first protocol's greeting) waits for it
// rather than run the handshake on the writer's goroutine.
func (t *nbSocket) Write(p []byte) (int, error) {
	t.mu.Lock()
	for t.state != nbEstablished && t.state != nbFailed && !t.closed && !t.deadline {
		t.cond.Wait()
	}
	ok := t.state == nbEstablished
	t.mu.Unlock()
	if !ok {
		return 0, net.ErrClosed
	}
	return t.tc.Write(p)
}

// CloseWrite sends close_notify, then half-closes the socket.
func (t *nbSocket) CloseWrite() error {
	t.mu.Lock()
	established := t.state == nbEstablished
	t.mu.Unlock()
	if established {
		t.tc.CloseWrite()
	}
	return t.raw.CloseWrite()
}

// nbAdapter is the net.Conn the session reads and writes: reads come from
// the inbox, writes go to the socket.
type nbAdapter struct{ t *nbSocket }

func (a *nbAdapter) Read(p []byte) (int, error) {
	t := a.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.inbox) == 0 {
		switch {
		case t.closed:
			return 0, net.ErrClosed
		case t.state == nbEstablished:
			if t.eof {
				return 0, io.EOF
			}
			return 0, errWouldBlock
		case t.eof:
			return 0, io.EOF
		case t.deadline:
			return 0, errors.New("transport socket: handshake timed out")
		}
		t.cond.Wait()
	}
	n := copy(p, t.inbox)
	t.inbox = t.inbox[n:]
	if len(t.inbox) == 0 {
		t.inbox = t.inbox[:0:0]
	}
	return n, nil
}

func (a *nbAdapter) Write(p []byte) (int, error)      { return a.t.raw.Write(p) }
func (a *nbAdapter) Close() error                     { return a.t.raw.Close() }
func (a *nbAdapter) LocalAddr() net.Addr              { return a.t.raw.LocalAddr() }
func (a *nbAdapter) RemoteAddr() net.Addr             { return a.t.raw.RemoteAddr() }
func (a *nbAdapter) SetDeadline(time.Time) error      { return nil }
func (a *nbAdapter) SetReadDeadline(time.Time) error  { return nil }
func (a *nbAdapter) SetWriteDeadline(time.Time) error { return nil }

// BlockingSession is a Session over a blocking net.Conn (netpoll), as
// crypto/tls's and TLCP's connections are.
type BlockingSession interface {
	Session
	Close() error
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
	SetDeadline(t time.Time) error
}

// NewBlocking runs a server session on a blocking socket as the
// connection's socket (netpoll): the handshake runs once, bounded by
// timeout, on whichever of the first Read or Write comes first (the
// other waits for it); done hears its outcome. CloseWrite sends the
// session's close notice, then half-closes raw.
func NewBlocking(s BlockingSession, raw network.Socket, timeout time.Duration, done func(Session, error)) network.Socket {
	return &blocking{BlockingSession: s, raw: raw, timeout: timeout, done: done}
}

// LocalCertificate is the certificate the session presented (nil when
// it does not say).
func (b *blocking) LocalCertificate() *x509.Certificate { return localCertificate(b.BlockingSession) }

type blocking struct {
	BlockingSession
	raw     network.Socket
	timeout time.Duration
	done    func(Session, error)
	once    sync.Once
	hsErr   error
}

func (b *blocking) handshake() error {
	b.once.Do(func() {
		b.SetDeadline(time.Now().Add(b.timeout))
		b.hsErr = b.BlockingSession.Handshake()
		b.SetDeadline(time.Time{})
		if b.done != nil {
			b.done(b.BlockingSession, b.hsErr)
		}
	})
	return b.hsErr
}

func (b *blocking) Read(p []byte) (int, error) {
	if err := b.handshake(); err != nil {
		return 0, err
	}
	return b.BlockingSession.Read(p)
}

func (b *blocking) Write(p []byte) (int, error) {
	if err := b.handshake(); err != nil {
		return 0, err
	}
	return b.BlockingSession.Write(p)
}

func (b *blocking) CloseWrite() error {
	b.BlockingSession.CloseWrite()
	return b.raw.CloseWrite()
}
