package upstream

// The upstream room owns its counters: a request takes its cluster's
// circuit-breaker slot and active count through a Call, and each try on
// a host takes the host's through an Attempt, whatever protocol carries
// it (HTTP/1.1, HTTP/2, a framed RPC) and whoever sends it (a request,
// a mirrored copy). The proxy never adds to a counter by hand.

// Call is one request's claim on a cluster: its max_requests slot,
// upstream_rq_total and upstream_rq_active.
type Call struct{ cl *Cluster }

// Begin claims a request slot. When the circuit breaker is full it counts
// upstream_rq_overflow and reports false.
func (c *Cluster) Begin() (Call, bool) {
	if !c.Breaker.AcquireRequest() {
		c.Stats.RqOverflow.Inc()
		return Call{}, false
	}
	c.Stats.RqTotal.Inc()
	c.Stats.RqActive.Inc()
	return Call{cl: c}, true
}

// End gives the slot back (once; a zero Call is a no-op).
func (r *Call) End() {
	if r.cl == nil {
		return
	}
	r.cl.Stats.RqActive.Dec()
	r.cl.Breaker.ReleaseRequest()
	r.cl = nil
}

// Attempt is one try of a request on a host: the host's active count
// while it lasts, and its total, success and error counts.
type Attempt struct{ h *Host }

// Begin starts an attempt on h.
func (h *Host) Begin() Attempt {
	h.Active.Add(1)
	h.RqTotal.Add(1)
	return Attempt{h: h}
}

// End ends the attempt with its outcome (once; a zero Attempt is a no-op).
func (a *Attempt) End(ok bool) {
	if a.h == nil {
		return
	}
	if ok {
		a.h.RqSuccess.Add(1)
	} else {
		a.h.RqError.Add(1)
	}
	a.Drop()
}

// Drop ends the attempt without an outcome: it was given up for a reason
// that says nothing of the host (a retry on the answer's status, the
// client left, a filter answered).
func (a *Attempt) Drop() {
	if a.h == nil {
		return
	}
	a.h.Active.Add(-1)
	a.h = nil
}
