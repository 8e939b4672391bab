package http1

import (
	"io"
	"sync"

	"github.com/straitproxy/strait/protocol"
)

// pipe carries a request body from the connection's reader to the worker.
// The reader appends copies; the worker takes everything buffered at once
// by swapping two buffers, so the slice it got stays untouched until its
// next read. Over limit, the pipe pauses the connection's reads; the worker
// resumes them once it has drained the pipe.
type pipe struct {
	mu     sync.Mutex
	cond   sync.Cond
	w, r   []byte
	eof    bool
	err    error
	limit  int
	paused bool
	// held: read returns protocol.ErrTunnelHeld rather than wait (a
	// tunnel held for a migration).
	held bool
	conn protocol.Conn
}

func (p *pipe) init(c protocol.Conn, limit int) {
	p.cond.L = &p.mu
	p.conn = c
	p.limit = limit
}

// reset readies the pipe for the next request, keeping its buffers.
func (p *pipe) reset() {
	p.mu.Lock()
	p.w, p.r = p.w[:0], p.r[:0]
	p.eof, p.err, p.paused, p.held = false, nil, false, false
	p.mu.Unlock()
}

// release drops the buffers so that an idle connection holds none; the
// next body allocates afresh.
func (p *pipe) release() {
	p.mu.Lock()
	p.w, p.r = nil, nil
	p.mu.Unlock()
}

// write copies b in; it pauses the connection when the pipe is over its
// limit. It does not retain b.
func (p *pipe) write(b []byte) {
	p.mu.Lock()
	p.w = append(p.w, b...)
	if len(p.w) >= p.limit && !p.paused {
		p.paused = true
		p.conn.PauseRead()
	}
	p.mu.Unlock()
	p.cond.Signal()
}

// unpause clears the pause the pipe caused and reports whether there was
// one (the caller resumes reading).
func (p *pipe) unpause() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.paused
	p.paused = false
	return was
}

// close ends the body: err nil means a clean end (io.EOF to the reader).
func (p *pipe) close(err error) {
	p.mu.Lock()
	if err != nil && p.err == nil {
		p.err = err
	}
	p.eof = true
	p.mu.Unlock()
	p.cond.Broadcast()
}

// hold sets or clears held.
func (p *pipe) hold(on bool) {
	p.mu.Lock()
	p.held = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

// ended reports that the body (a tunnel's client side) ended or failed.
func (p *pipe) ended() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eof
}

// complete reports whether the body arrived whole.
func (p *pipe) complete() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eof && p.err == nil
}

// read returns what is buffered, valid until the next read; io.EOF once
// the body ended and was read whole.
func (p *pipe) read() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.w) == 0 && !p.eof && !p.held {
		p.cond.Wait()
	}
	if p.err != nil {
		return nil, p.err
	}
	if len(p.w) == 0 {
		if !p.eof {
			return nil, protocol.ErrTunnelHeld
		}
		return nil, io.EOF
	}
	p.r, p.w = p.w, p.r[:0]
	if p.paused {
		p.paused = false
		p.conn.ResumeRead()
	}
	return p.r, nil
}
