package protocol

import (
	"strings"
	"sync/atomic"
)

// Auto returns a codec that chooses among codecs by a connection's first
// bytes: the first whose Match accepts them wins; while any asks for more
// bytes, it waits; when none matches, the last codec takes the connection
// (it answers the garbage with its own protocol's error). This is
// codec_type AUTO, and the seam other protocols (Dubbo) plug into.
func Auto(codecs ...*Codec) *Codec {
	names := make([]string, len(codecs))
	for i, c := range codecs {
		names[i] = c.Name
	}
	return &Codec{
		Name: "auto(" + strings.Join(names, ",") + ")",
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
			return 0
		}
		sc = codec.NewServer(d.c, d.opts, d.cb)
		d.chosen.Store(&sc)
	}
	return sc.Decode(data)
}

// choose returns the codec for a connection starting with prefix, or nil
// while more bytes are needed to tell.
func (d *detector) choose(prefix []byte) *Codec {
	waiting := false
	for _, c := range d.codecs {
		if c.Match == nil {
			continue
		}
		match, more := c.Match(prefix)
		if match {
			return c
		}
		waiting = waiting || more
	}
	if waiting {
		return nil
	}
	return d.codecs[len(d.codecs)-1]
}

func (d *detector) OnEOF() {
	if sc := d.get(); sc != nil {
		sc.OnEOF()
		return
	}
	d.c.Close()
}

func (d *detector) OnClose(err error) {
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
