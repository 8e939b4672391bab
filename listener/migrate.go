package listener

import (
	"errors"
	"fmt"
	"os"

	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
)

// Connection migration (hot restart): the old process asks each
// listener for the connections whose handler can move (Migrators); the
// new process's listener at the same address adopts each (Adopt),
// matches its filter chain as for a new connection, and gives it to the
// chain's terminal filter to resume (filter.NetworkAdopter). Only chains
// of that one filter, without a transport socket, take a migrated
// connection: the filters before it and TLS keep state of this process.

// StopAccepting closes this process's copy of the listening socket: the
// next process accepts on it alone; the connections go on.
func (l *Listener) StopAccepting() {
	if l.owns() {
		l.bind.acc.Close()
	}
}

// Migrators returns the connections whose handler can move.
func (l *Listener) Migrators() map[*network.Conn]network.Migrator {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[*network.Conn]network.Migrator{}
	for c, h := range l.conns {
		if m, ok := h.(network.Migrator); ok {
			out[c] = m
		}
	}
	return out
}

// Adopt serves a connection the previous process handed over: f is its
// socket (a duplicate, the caller's to close), info what that process's
// listener filters learned, h the handler's part. On an error nothing
// was started and the socket is left as it was (the old process keeps
// serving it).
func (l *Listener) Adopt(f *os.File, info *network.ConnInfo, h *network.Handoff) error {
	ad, ok := l.io.(network.ConnAdopter)
	if !ok {
		return fmt.Errorf("listener %q: its I/O model cannot adopt connections", l.Name)
	}
	if !l.owns() || l.draining.Load() {
		return fmt.Errorf("listener %q is not serving", l.Name)
	}
	c, err := ad.AdoptConn(l.bind.ctx, f)
	if err != nil {
		return fmt.Errorf("listener %q: %w", l.Name, err)
	}
	c.BufferLimit = l.bufferLimit
	c.SetInfo(info)
	// Closing a connection never started gives its descriptor back
	// without a shutdown: the old process's socket is untouched.
	handler, err := l.resume(c, h)
	if err != nil {
		c.Close()
		return err
	}
	c.SetHandler(l.track(c, handler))
	l.io.Start(c)
	if l.draining.Load() {
		drain(handler, c)
	}
	return nil
}

// resume finds c's filter chain and has its terminal filter resume h.
func (l *Listener) resume(c *network.Conn, h *network.Handoff) (network.Handler, error) {
	ch := l.match(c)
	switch {
	case ch == nil:
		return nil, fmt.Errorf("listener %q: no filter chain matches the migrated connection", l.Name)
	case ch.ts != nil:
		return nil, fmt.Errorf("listener %q: filter chain %q has a transport socket", l.Name, ch.name)
	case len(ch.factories) != 1:
		return nil, fmt.Errorf("listener %q: filter chain %q has filters before its terminal one", l.Name, ch.name)
	}
	fa, ok := ch.factories[0].(filter.NetworkAdopter)
	if !ok {
		return nil, fmt.Errorf("listener %q: filter chain %q does not end in %s", l.Name, ch.name, h.Filter)
	}
	handler, err := fa.Adopt(c, h)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listener %q", l.Name), err)
	}
	return handler, nil
}
