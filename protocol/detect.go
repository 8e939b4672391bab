package protocol

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Auto returns a codec that chooses among codecs by a connection's first
// bytes: the first whose Match accepts them wins; while any asks for more
// bytes, it waits; when none matches, the last codec takes the connection
// (it answers the garbage with its own protocol's error). This is
// codec_type AUTO, and the seam other protocols (Dubbo) plug into.
func Auto(codecs ...*Codec) *Codec {
	names := make([]string, len(codecs))
	resumes := false
	for i, c := range codecs {
		names[i] = c.Name
		resumes = resumes || c.Resumes // its first bytes choose that codec
	}
	return &Codec{
		Name:    "auto(" + strings.Join(names, ",") + ")",
		Resumes: resumes,
		NewServer: func(c Conn, opts ServerOptions, cb ServerCallbacks) ServerCodec {
			return &detector{codecs: codecs, c: c, opts: opts, cb: cb}
		},
	}
}

// detector is the server codec until the protocol is known, then a
// pass-through to the chosen one.
type detector struct {
	codecs []*Codec
	c      Conn
	opts   ServerOptions
	cb     ServerCallbacks
	chosen atomic.Pointer[ServerCodec]
	// timer bounds the wait for enough bytes to choose (the first bytes
	// of a request head: RequestHeadersTimeout).
	mu    sync.Mutex
	timer *time.Timer
}

func (d *detector) get() ServerCodec {
	if p := d.chosen.Load(); p != nil {
		return *p
	}
	return nil
}

func (d *detector) Decode(data []byte) int {
	sc := d.get()
	if sc == nil {
		codec := d.choose(data)
		if codec == nil {
			d.arm()
			return 0
		}
		d.disarm()
		sc = codec.NewServer(d.c, d.opts, d.cb)
		d.chosen.Store(&sc)
	}
	return sc.Decode(data)
}

// arm starts the request headers timeout while the protocol is unknown.
func (d *detector) arm() {
	if d.opts.RequestHeadersTimeout <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer == nil {
		d.timer = time.AfterFunc(d.opts.RequestHeadersTimeout, d.timeout)
	}
}

func (d *detector) disarm() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
}

// timeout closes a connection whose first bytes did not tell its
// protocol in time (a request head trickled in).
func (d *detector) timeout() {
	if d.get() != nil {
		return
	}
	if c, ok := d.cb.(HeadersTimeoutCounter); ok {
		c.OnHeadersTimeout()
	}
	d.c.Close()
}

// choose returns the codec for a connection starting with prefix, or nil
// while more bytes are needed to tell. Codecs are asked in order, and one
// that needs more bytes is waited for before a later one is taken: "PRI "
// trickled in is the start of HTTP/2's preface, not an HTTP/1.1 request.
func (d *detector) choose(prefix []byte) *Codec {
	for _, c := range d.codecs {
		if c.Match == nil {
			continue
		}
		match, more := c.Match(prefix)
		if match {
			return c
		}
		if more {
			return nil
		}
	}
	return d.codecs[len(d.codecs)-1]
}

// HoldIdle implements IdleHolder through the chosen codec (nothing is
// held before the protocol is known).
func (d *detector) HoldIdle() bool {
	h, ok := d.get().(IdleHolder)
	return ok && h.HoldIdle()
}

// ReleaseIdle implements IdleHolder.
func (d *detector) ReleaseIdle() {
	if h, ok := d.get().(IdleHolder); ok {
		h.ReleaseIdle()
	}
}

func (d *detector) OnEOF() {
	if sc := d.get(); sc != nil {
		sc.OnEOF()
		return
	}
	d.c.Close()
}

func (d *detector) OnClose(err error) {
	d.disarm()
	if sc := d.get(); sc != nil {
		sc.OnClose(err)
	}
}

func (d *detector) Drain() {
	if sc := d.get(); sc != nil {
		sc.Drain()
		return
	}
	d.c.Close()
}

func (d *detector) Active() int {
	if sc := d.get(); sc != nil {
		return sc.Active()
	}
	return 0
}
