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
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			data, err := s.ds.ReadData()
			s.info.BytesReceived += uint64(len(data))
			if len(data) > 0 {
				if s.us.WriteData(data, false) != nil {
					s.conn.Close() // the upstream is gone: end the other direction too
					return
				}
			}
			if err == io.EOF {
				s.us.WriteData(nil, true) // half-close towards the upstream
				return
			}
			if err != nil {
				s.conn.Close() // the client is gone: unblock the upstream reader
				return
			}
		}
	}()
	for {
		data, err := s.us.ReadData()
		if len(data) > 0 {
			if s.ds.WriteData(data, false) != nil {
				break
			}
			s.info.BytesSent += uint64(len(data))
		}
		if err != nil {
			if err == io.EOF {
				s.ds.WriteData(nil, true)
			}
			break
		}
	}
	s.conn.Close()    // unblocks the other direction's upstream write
	s.ds.Finish(true) // closes the client side, which ends the reader
	wg.Wait()
	s.endAttempt(false)
}
