package xds

import (
	"sort"
	"time"
)

// renewTTLs restarts the TTLs an accepted response gave (resources and
// heartbeats), drops the expiry of resources gone or updated without a
// TTL, and sets the timer for the earliest (mu held).
func (c *Client) renewTTLs(ts *typeState, ttls map[string]time.Duration) {
	for n := range ts.expires {
		if r := ts.set[n]; r == nil || r.TTL == 0 && ttls[n] == 0 {
			delete(ts.expires, n)
		}
	}
	now := time.Now()
	for n, d := range ttls {
		if ts.set[n] != nil {
			ts.expires[n] = now.Add(d)
		}
	}
	c.armExpiry(ts)
}

// addTTL notes a TTL a response gives, in a map made on the first.
func addTTL(ttls map[string]time.Duration, name string, d time.Duration) map[string]time.Duration {
	if d <= 0 {
		return ttls
	}
	if ttls == nil {
		ttls = map[string]time.Duration{}
	}
	ttls[name] = d
	return ttls
}

// armExpiry sets ts's timer for its earliest expiry (mu held).
func (c *Client) armExpiry(ts *typeState) {
	var first time.Time
	for _, t := range ts.expires {
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	switch {
	case first.IsZero():
		if ts.expiry != nil {
			ts.expiry.Stop()
		}
	case ts.expiry == nil:
		ts.expiry = time.AfterFunc(time.Until(first), func() { c.expire(ts) })
	default:
		ts.expiry.Reset(time.Until(first))
	}
}

// expire removes the resources whose TTL ran out without a heartbeat or
// an update, as if the server had removed them: the management server is
// gone or has forgotten them (a fault injection that must not outlive
// its controller, say). The handler gets the set without them; if it
// refuses that, they stay, and are not expired again.
func (c *Client) expire(ts *typeState) {
	if c.ctx != nil && c.ctx.Err() != nil {
		return
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.mu.Lock()
	now := time.Now()
	var gone []string
	set := make(map[string]*Resource, len(ts.set))
	for n, r := range ts.set {
		set[n] = r
	}
	for n, t := range ts.expires {
		if !t.After(now) {
			delete(ts.expires, n)
			if set[n] != nil {
				delete(set, n)
				gone = append(gone, n)
			}
		}
	}
	if len(gone) == 0 {
		c.armExpiry(ts)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	sort.Strings(gone)
	err := c.o.Handler.Apply(ts.url, set)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.log.Warn("xDS resources expired (TTL) but their removal was refused; kept", "type", ts.url, "names", gone, "err", err)
	} else {
		c.log.Info("xDS resources expired (TTL)", "type", ts.url, "names", gone)
		for _, n := range gone {
			delete(ts.set, n)
		}
	}
	c.armExpiry(ts)
}
