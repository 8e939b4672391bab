package dubbotest

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Handler answers a call: a value, or an exception message; status other
// than 0 or StatusOK answers with that status and exc as its message.
type Handler func(c *Call) (value any, exc string, status byte)

// Echo answers every call with its first argument (nil without one).
func Echo(c *Call) (any, string, byte) {
	if len(c.Args) == 0 {
		return nil, "", 0
	}
	return c.Args[0], "", 0
}

// Provider is a Dubbo provider on a loopback port.
type Provider struct {
	Addr     string
	ln       net.Listener
	handler  Handler
	mu       sync.Mutex
	conns    map[net.Conn]bool
	Calls    atomic.Int64
	Accepted atomic.Int64
	Pings    atomic.Int64
	wg       sync.WaitGroup
}

// StartProvider serves h on 127.0.0.1 (addr "" picks a port).
func StartProvider(addr string, h Handler) (*Provider, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return ServeProvider(ln, h), nil
}

// ServeProvider serves h on ln (a TLS listener, say) until Close.
func ServeProvider(ln net.Listener, h Handler) *Provider {
	p := &Provider{Addr: ln.Addr().String(), ln: ln, handler: h, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p
}

func (p *Provider) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = true
		p.mu.Unlock()
		p.Accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Provider) serve(c net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	var wmu sync.Mutex
	write := func(b []byte) {
		wmu.Lock()
		c.Write(b)
		wmu.Unlock()
	}
	for {
		f, err := ReadFrame(c)
		if err != nil {
			return
		}
		if !f.Request() {
			continue
		}
		if f.Event() {
			p.Pings.Add(1)
			write(frame(flagEvent|hessian2ID, StatusOK, f.ID, []byte{'N'}))
			continue
		}
		call, err := DecodeRequest(f)
		if err != nil {
			write(errorFrame(f.ID, 40, err.Error()))
			continue
		}
		p.Calls.Add(1)
		go func(id uint64) {
			v, exc, st := p.handler(call)
			if call.OneWay {
				return
			}
			if st != 0 && st != StatusOK {
				write(errorFrame(id, st, exc))
				return
			}
			write(EncodeResponse(id, v, exc))
		}(f.ID)
	}
}

func errorFrame(id uint64, status byte, msg string) []byte {
	e := newEncoder()
	e.Encode(msg)
	return frame(hessian2ID, status, id, e.Buffer())
}

// Conns reports the connections open now.
func (p *Provider) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the provider: the listener and every connection, at once
// (a killed provider).
func (p *Provider) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Client is a multiplexed Dubbo consumer connection.
type Client struct {
	c      net.Conn
	wmu    sync.Mutex
	mu     sync.Mutex
	next   uint64
	wait   map[uint64]chan *Frame
	err    error
	closed chan struct{}
}

// Dial connects a consumer.
func Dial(addr string) (*Client, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewClient(c), nil
}

// NewClient is a consumer on c (a TLS connection, say).
func NewClient(c net.Conn) *Client {
	cl := &Client{c: c, next: 1, wait: map[uint64]chan *Frame{}, closed: make(chan struct{})}
	go cl.read()
	return cl
}

func (cl *Client) read() {
	defer close(cl.closed)
	for {
		f, err := ReadFrame(cl.c)
		if err != nil {
			cl.mu.Lock()
			cl.err = err
			cl.mu.Unlock()
			return
		}
		cl.mu.Lock()
		ch := cl.wait[f.ID]
		delete(cl.wait, f.ID)
		cl.mu.Unlock()
		if ch != nil {
			ch <- f
		}
	}
}

// ErrTimeout is a call that got no answer in time.
var ErrTimeout = errors.New("dubbotest: no answer in time")

// Send writes raw bytes (malformed input tests).
func (cl *Client) Send(b []byte) error {
	cl.wmu.Lock()
	defer cl.wmu.Unlock()
	_, err := cl.c.Write(b)
	return err
}

// Roundtrip sends a frame built with the next id and waits for the frame
// that answers it.
func (cl *Client) Roundtrip(build func(id uint64) []byte, timeout time.Duration) (*Frame, error) {
	ch := make(chan *Frame, 1)
	cl.mu.Lock()
	id := cl.next
	cl.next++
	cl.wait[id] = ch
	cl.mu.Unlock()
	if err := cl.Send(build(id)); err != nil {
		return nil, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f := <-ch:
		return f, nil
	case <-cl.closed:
		// The reader hands over a reply before it sees the close that
		// follows (an error reply, then the server's FIN): when both are
		// ready, the reply wins.
		select {
		case f := <-ch:
			return f, nil
		default:
		}
		cl.mu.Lock()
		err := cl.err
		cl.mu.Unlock()
		return nil, err
	case <-t.C:
		cl.mu.Lock()
		delete(cl.wait, id)
		cl.mu.Unlock()
		return nil, ErrTimeout
	}
}

// Invoke makes a two-way call and decodes its answer.
func (cl *Client) Invoke(c *Call, timeout time.Duration) (*Result, error) {
	var encErr error
	f, err := cl.Roundtrip(func(id uint64) []byte {
		b, err := EncodeRequest(id, c)
		encErr = err
		return b
	}, timeout)
	if encErr != nil {
		return nil, encErr
	}
	if err != nil {
		return nil, err
	}
	return DecodeResponse(f)
}

// Ping sends a heartbeat and waits for its answer.
func (cl *Client) Ping(timeout time.Duration) error {
	f, err := cl.Roundtrip(Heartbeat, timeout)
	if err != nil {
		return err
	}
	if !f.Event() || f.Request() || f.Status != StatusOK {
		return errors.New("dubbotest: heartbeat answered with a non-heartbeat frame")
	}
	return nil
}

// Close closes the connection.
func (cl *Client) Close() error { return cl.c.Close() }
