package http1

import (
	"net"
	"testing"
	"time"
)

// deadlineConn counts the deadlines set on it.
type deadlineConn struct {
	net.Conn
	state any
	set   []time.Time
}

func (c *deadlineConn) CodecState() *any { return &c.state }
func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// Requests in quick succession with a 15 s timeout touch the socket's
// timer once: each deadline falls within the slack of the first. A
// deadline beyond the slack, or an earlier one, is set; so is clearing.
func TestSetDeadlineSlack(t *testing.T) {
	c := &deadlineConn{}
	cs := newClient(c).(*clientStream)
	now := time.Now()
	for i := range 20 {
		cs.SetDeadline(now.Add(15*time.Second + time.Duration(i)*time.Millisecond))
	}
	if len(c.set) != 1 {
		t.Fatalf("%d deadline updates for 20 requests within 20 ms, want 1", len(c.set))
	}
	if late := c.set[0].Sub(now.Add(15 * time.Second)); late <= 0 || late > 15*time.Second/64 {
		t.Fatalf("deadline set %v late, want within 1/64 of 15 s", late)
	}
	cs.SetDeadline(now.Add(16 * time.Second)) // beyond the slack
	cs.SetDeadline(now.Add(time.Second))      // earlier
	if len(c.set) != 3 || c.set[2].Before(now.Add(time.Second)) || c.set[2].After(now.Add(time.Second+time.Second/64)) {
		t.Fatalf("deadlines set %v, want 3 with the last at 1 s (+1/64)", c.set)
	}
	// A long timeout is late by maxSlack at most.
	cs.SetDeadline(now.Add(time.Hour))
	if late := c.set[3].Sub(now.Add(time.Hour)); late <= 0 || late > maxSlack {
		t.Fatalf("a 1 h deadline set %v late, want at most %v", late, maxSlack)
	}
	cs.SetDeadline(time.Time{})
	cs.SetDeadline(time.Time{})
	if len(c.set) != 5 || !c.set[4].IsZero() {
		t.Fatalf("clearing: %v, want one zero deadline", c.set)
	}
}
