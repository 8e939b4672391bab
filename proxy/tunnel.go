package proxy

import (
	"io"
	"sync"
	"time"

	"github.com/straitproxy/strait/protocol"
)

// tunnel serves an accepted upgrade (101, e.g. WebSocket): from here both
// sides are raw bytes. The worker copies upstream to client; a helper
// goroutine copies client to upstream; each direction's end half-closes
// the other side.
func (s *Stream) tunnel() {
	s.cfg.Stats.CxUpgradesTotal.Inc()
	s.respStarted = true
	s.closeAfter = true // the connection is the tunnel's now
	// The route timeout ends with the upgrade response, as in Envoy: a
	// tunnel lives as long as its peers keep it.
	s.us.SetDeadline(time.Time{})
	if err := s.ds.WriteHeaders(&s.resp, false); err != nil {
		s.endAttempt(false)
		s.resetDownstream()
		return
	}
	if u, ok := s.ds.(protocol.Upgrader); ok {
		u.Upgrade()
	}
	t := &tunnelCtl{s: s}
	s.cm.tunnel.Store(t)
	defer s.cm.tunnel.CompareAndSwap(t, nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			data, err := s.ds.ReadData()
			s.info.BytesReceived += uint64(len(data))
			if len(data) > 0 {
				if s.us.WriteData(data, false) != nil {
					t.half.Store(true)
					s.conn.Close() // the upstream is gone: end the other direction too
					return
				}
			}
			switch {
			case err == nil:
			case err == protocol.ErrTunnelHeld: // a migration (tunnelmove.go)
				if halt(&t.move) {
					return
				}
			case err == io.EOF:
				t.half.Store(true)
				s.us.WriteData(nil, true) // half-close towards the upstream
				return
			default:
				t.half.Store(true)
				s.conn.Close() // the client is gone: unblock the upstream reader
				return
			}
		}
	}()
	for {
		data, err := s.us.ReadData()
		if len(data) > 0 {
			if s.ds.WriteData(data, false) != nil {
				t.half.Store(true)
				break
			}
			s.info.BytesSent += uint64(len(data))
		}
		if err != nil {
			if isTimeout(err) { // only a migration sets a deadline here
				if halt(&t.move) {
					wg.Wait()
					s.endMoved()
					return
				}
				continue
			}
			t.half.Store(true)
			if err == io.EOF {
				s.ds.WriteData(nil, true)
			}
			break
		}
	}
	s.conn.Close()    // unblocks the other direction's upstream write
	s.ds.Finish(true) // closes the client side, which ends the reader
	wg.Wait()
	t.end() // after a migration attempt under way gave up
	s.endAttempt(false)
}
