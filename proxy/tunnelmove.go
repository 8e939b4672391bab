package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
)

// Connection migration of tunnels (hot restart): an HTTP/1.1 connection
// upgraded to a tunnel (101, WebSocket) moves to the next process with
// its upstream connection, as a tcp_proxy session does. Both copies stop
// between two writes (the downstream's reader is held and the codec's
// pipe drained to the upstream; the upstream read is cut short by a read
// deadline), so every byte read on one side was written to the other and
// what neither side read yet waits in the kernel's buffers, which travel
// with the sockets. The next process goes on with a plain two-way copy
// (resumedTunnel), which can move again. A tunnel over TLS on either
// side, half-closed, or through HTTP/2 does not move: it finishes here.

// tunnelState is what the next process needs to go on, and to write the
// access log line of the upgrade request when the tunnel ends.
type tunnelState struct {
	Kind     string      `json:"kind"` // "tunnel"
	Cluster  string      `json:"cluster"`
	Host     string      `json:"host"`
	Start    int64       `json:"start_unix_nano"`
	Protocol string      `json:"protocol"`
	Route    string      `json:"route,omitempty"`
	Request  [][2]string `json:"request"`
	Response [][2]string `json:"response"`
	Received uint64      `json:"bytes_received"`
	Sent     uint64      `json:"bytes_sent"`
	Attempts int         `json:"attempts"`
}

const kindTunnel = "tunnel"

// tunnelMove is one migration attempt: each copy, stopped between two
// writes, says so on stopped and waits for the outcome (decided closes;
// commit is set before it does).
type tunnelMove struct {
	stopped chan struct{}
	decided chan struct{}
	commit  bool
}

func newTunnelMove() *tunnelMove {
	return &tunnelMove{stopped: make(chan struct{}, 2), decided: make(chan struct{})}
}

// halt is a copy's stop at a migration's request: it reports whether the
// tunnel moved (the copy then ends without touching either socket).
// Without a migration under way (one gave up meanwhile) it returns false
// at once and the copy goes on.
func halt(p *atomic.Pointer[tunnelMove]) bool {
	m := p.Load()
	if m == nil {
		return false
	}
	m.stopped <- struct{}{}
	<-m.decided
	return m.commit
}

// await waits for n copies to stop, until end.
func (m *tunnelMove) await(n int, end time.Time) bool {
	t := time.NewTimer(time.Until(end))
	defer t.Stop()
	for ; n > 0; n-- {
		select {
		case <-m.stopped:
		case <-t.C:
			return false
		}
	}
	return true
}

// isTimeout reports a read cut short by a deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// aLongTimeAgo is the read deadline that stops an upstream read.
var aLongTimeAgo = time.Unix(1, 0)

// tunnelCtl is a live tunnel's handle for a migration
// (connManager.tunnel).
type tunnelCtl struct {
	s    *Stream
	half atomic.Bool // a direction ended: it cannot move
	move atomic.Pointer[tunnelMove]
	// mu is held by a migration attempt until it hands the tunnel over
	// (both copies stopped) or gives up; the tunnel takes it to end, so
	// that an attempt never touches a stream that ended (ended).
	mu    sync.Mutex
	ended bool
}

// end marks the tunnel ended, after any migration attempt.
func (t *tunnelCtl) end() {
	t.mu.Lock()
	t.ended = true
	t.mu.Unlock()
}

// migrate holds both copies and returns the tunnel's Handoff.
func (t *tunnelCtl) migrate(wait time.Duration) (*network.Handoff, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.s
	if t.ended || t.half.Load() {
		return nil, errBusy
	}
	th, ok := s.ds.(protocol.TunnelHolder)
	down, up := s.cm.conn, s.conn
	if !ok || up == nil || !down.Detachable() || th.TunnelEnded() {
		return nil, errBusy
	}
	uf, err := up.File()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBusy, err)
	}
	end := time.Now().Add(wait)
	m := newTunnelMove()
	t.move.Store(m)
	resume := func() {
		th.HoldTunnel(false)
		up.SetReadDeadline(time.Time{})
		t.move.Store(nil)
		close(m.decided)
	}
	d, err := down.Detach(time.Until(end), nil)
	if err != nil {
		uf.Close()
		resume()
		return nil, err
	}
	th.HoldTunnel(true)
	up.SetReadDeadline(aLongTimeAgo)
	if !m.await(2, end) || t.half.Load() {
		uf.Close()
		d.Abort()
		resume()
		return nil, fmt.Errorf("%w: the tunnel did not stop", errBusy)
	}
	// Both copies stopped: the stream is still.
	st := tunnelState{Kind: kindTunnel, Cluster: s.cluster.Name, Host: s.host.Addr, Start: s.start.UnixNano(),
		Protocol: s.info.Protocol, Route: s.info.RouteName, Request: headerList(s.req), Response: headerList(&s.resp),
		Received: s.info.BytesReceived, Sent: s.info.BytesSent, Attempts: s.attempt}
	state, _ := json.Marshal(&st)
	return &network.Handoff{Filter: FilterName, Conn: d.File, Files: []*os.File{uf}, Pending: d.Pending, State: state,
		Commit: func() {
			uf.Close()
			d.Commit() // before the copies end: the stream's close is then no close
			m.commit = true
			close(m.decided)
		},
		Abort: func() {
			uf.Close()
			d.Abort()
			resume()
		},
	}, nil
}

// headerList is h as name, value pairs.
func headerList(h *protocol.Headers) [][2]string {
	out := make([][2]string, 0, h.Len())
	h.Visit(func(name, value []byte) bool {
		out = append(out, [2]string{string(name), string(value)})
		return true
	})
	return out
}

// headersOf makes headers of a list headerList made.
func headersOf(list [][2]string) *protocol.Headers {
	h := new(protocol.Headers)
	for _, f := range list {
		h.AddString(f[0], f[1])
	}
	return h
}

// endMoved ends the attempt of a tunnel that moved: its upstream
// connection is the next process's now.
func (s *Stream) endMoved() {
	s.try.End(true)
	s.unwatchAttempt()
	s.stopPump()
	s.us.Close()
	s.us = nil
	s.conn.Pool().Handed(s.conn)
	s.conn = nil
	s.moved = true
}
