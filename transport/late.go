package transport

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/network"
)

// Late is a connection's socket whose transport is chosen after bytes
// were read: the listener filters look at the first bytes, the filter
// chain they select may terminate TLS, and the handshake must then start
// with the bytes already read. Until Install it is the raw socket.
//
// It needs a model whose reader calls the socket's Read (netpoll); the
// epoll model reads its descriptor itself, and listeners refuse a
// transport socket under it.
type Late struct {
	raw network.Socket
	cur atomic.Pointer[network.Socket]
}

// NewLate wraps raw.
func NewLate(raw network.Socket) *Late { return &Late{raw: raw} }

// Install makes the connection read and write through d's socket from
// now on; read are the bytes already read from raw, which the transport
// reads first. It is called from the connection's reader, before any
// write.
func (l *Late) Install(d Downstream, read []byte) error {
	s, err := d.Wrap(&prefixed{Socket: l.raw, pre: append([]byte(nil), read...)})
	if err != nil {
		return err
	}
	l.cur.Store(&s)
	return nil
}

func (l *Late) sock() network.Socket {
	if s := l.cur.Load(); s != nil {
		return *s
	}
	return l.raw
}

func (l *Late) Read(p []byte) (int, error)  { return l.sock().Read(p) }
func (l *Late) Write(p []byte) (int, error) { return l.sock().Write(p) }
func (l *Late) CloseWrite() error           { return l.sock().CloseWrite() }
func (l *Late) Close() error                { return l.sock().Close() }
func (l *Late) LocalAddr() net.Addr         { return l.raw.LocalAddr() }
func (l *Late) RemoteAddr() net.Addr        { return l.raw.RemoteAddr() }

// Upper returns the installed transport's socket (nil before Install).
func (l *Late) Upper() network.Socket {
	if s := l.cur.Load(); s != nil {
		return *s
	}
	return nil
}

// prefixed reads pre before the socket; it is a net.Conn when the socket
// is one (crypto/tls wants a net.Conn).
type prefixed struct {
	network.Socket
	pre []byte
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		if len(p.pre) == 0 {
			p.pre = nil
		}
		return n, nil
	}
	return p.Socket.Read(b)
}

func (p *prefixed) SetDeadline(t time.Time) error      { return deadline(p.Socket, t, 3) }
func (p *prefixed) SetReadDeadline(t time.Time) error  { return deadline(p.Socket, t, 1) }
func (p *prefixed) SetWriteDeadline(t time.Time) error { return deadline(p.Socket, t, 2) }

func deadline(s network.Socket, t time.Time, which int) error {
	nc, ok := s.(net.Conn)
	if !ok {
		return nil
	}
	switch which {
	case 1:
		return nc.SetReadDeadline(t)
	case 2:
		return nc.SetWriteDeadline(t)
	}
	return nc.SetDeadline(t)
}

// Writev gathers the buffers when the current socket can (the raw socket
// of a plaintext chain).
func (l *Late) Writev(bufs [][]byte) (int64, error) {
	s := l.sock()
	if vw, ok := s.(interface{ Writev([][]byte) (int64, error) }); ok {
		return vw.Writev(bufs)
	}
	nb := net.Buffers(bufs)
	return nb.WriteTo(s)
}

// SetReadDeadline sets the raw socket's read deadline (network.Conn.Kick
// wakes a blocked reader with it).
func (l *Late) SetReadDeadline(t time.Time) error { return deadline(l.raw, t, 1) }
