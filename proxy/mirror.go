package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
	"github.com/straitproxy/strait/upstream"
)

// Traffic mirroring (route request_mirror_policies): a copy of the
// request goes to each sampled shadow cluster, fire and forget. The
// primary only ever hands a shadow copies of what it sends, without
// waiting: each shadow runs on a goroutine of its own, its answer is
// read and dropped, and whatever happens to it (slow, failing, black-
// holed) never reaches the primary. A shadow may lag the primary by at
// most the connection's buffer limit: past it that copy is abandoned
// (rq_mirror_abandoned), so memory stays bounded; so is the number of
// shadows, by the shadow cluster's max_requests circuit breaker.

// shadow is one mirrored copy of a request.
type shadow struct {
	cl    *upstream.Cluster
	call  upstream.Call
	cfg   *Config
	stats *Stats
	req   protocol.Headers
	h2    bool
	// until bounds the whole exchange: the route timeout, else the
	// stream idle timeout.
	until time.Time
	limit int
	// ctx ends with the copy's time, or when it is abandoned.
	ctx    context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	wake chan struct{} // a send or abandon happened (cap 1)
	// queue holds the pieces not yet taken by the shadow; queued counts
	// them, and inflight the pieces taken and still being written: the
	// copy's lag behind the primary.
	queue     [][]byte
	queued    int
	inflight  int
	ended     bool // the request's end has been offered
	trailers  *protocol.Headers
	abandoned bool
	finished  bool // run returned: nothing more is taken

	// usMu guards us, the open upstream stream, between abandon's
	// cancel and the shadow's Close (never held by the primary).
	usMu sync.Mutex
	us   protocol.ClientStream
}

// startMirrors starts a shadow per sampled policy of the route.
func (s *Stream) startMirrors() {
	// One sample for every policy of the request, as Envoy, apart from
	// the route's own runtime_fraction sample.
	sample := (s.random ^ 0x5851f42d4c957f2d) * 0xbf58476d1ce4e5b9
	for _, p := range s.route.Mirrors {
		if !p.Sampled(sample) {
			continue
		}
		name := p.ClusterFor(s.req)
		if name == "" {
			continue // cluster_header absent: no copy, as Envoy
		}
		st := s.cfg.Stats
		cl, ok := s.cfg.Clusters.Get(name)
		if !ok {
			st.MirrorFailed.Inc()
			continue
		}
		call, ok := cl.Begin()
		if !ok {
			st.MirrorFailed.Inc()
			continue
		}
		st.MirrorTotal.Inc()
		m := &shadow{cl: cl, call: call, cfg: s.cfg, stats: st, h2: s.h2, limit: s.BufferLimit(), wake: make(chan struct{}, 1)}
		m.req.CopyFrom(s.req)
		m.req.Set(protocol.Authority, p.ShadowHost(s.req.Host()))
		d := s.route.Timeout
		if d <= 0 {
			d = s.streamIdle()
		}
		if d <= 0 {
			d = router.DefaultTimeout
		}
		m.until = time.Now().Add(d)
		m.ctx, m.cancel = context.WithDeadline(context.Background(), m.until)
		if s.ds.HeadersOnly() {
			m.ended = true
		}
		s.mirrors = append(s.mirrors, m)
		go m.run()
	}
}

// mirrorBody hands each shadow a copy of a piece of the request body as
// it goes upstream (end: the last piece; trailers may follow it).
func (s *Stream) mirrorBody(data []byte, end bool, trailers *protocol.Headers) {
	for _, m := range s.mirrors {
		m.offer(data, end, trailers)
	}
}

// detachMirrors lets the shadows go on alone once the primary finishes;
// one whose request never ended (the client left, the primary failed
// before the body was read) is abandoned.
func (s *Stream) detachMirrors() {
	for _, m := range s.mirrors {
		m.mu.Lock()
		cut := !m.ended && !m.finished
		m.mu.Unlock()
		if cut {
			m.abandon()
		}
	}
	s.mirrors = nil
}

func (m *shadow) offer(data []byte, end bool, trailers *protocol.Headers) {
	m.mu.Lock()
	if m.abandoned || m.ended || m.finished {
		m.mu.Unlock()
		return
	}
	if len(data) > 0 {
		// (A copy that has caught up takes a piece of any size: pieces
		// may be larger than the limit.)
		if lag := m.queued + m.inflight; lag > 0 && lag+len(data) > m.limit {
			m.mu.Unlock()
			m.abandon()
			return
		}
		m.queue = append(m.queue, append([]byte(nil), data...))
		m.queued += len(data)
	}
	if end {
		m.ended = true
		if trailers != nil {
			m.trailers = &protocol.Headers{}
			m.trailers.CopyFrom(trailers)
		}
	}
	m.mu.Unlock()
	m.signal()
}

// abandon gives up the copy: its queue is dropped, a wait for a
// connection ends, and its upstream stream, if open, is reset on a
// goroutine of its own (resetting may write to the shadow's socket,
// which the primary must never wait for).
func (m *shadow) abandon() {
	m.mu.Lock()
	if m.abandoned || m.finished {
		m.mu.Unlock()
		return
	}
	m.abandoned = true
	m.queue, m.queued = nil, 0
	m.mu.Unlock()
	m.stats.MirrorAbandoned.Inc()
	m.cancel()
	m.signal()
	go func() {
		m.usMu.Lock()
		defer m.usMu.Unlock()
		if m.us != nil {
			cancelStream(m.us, errMirrorAbandoned)
		}
	}()
}

func (m *shadow) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

var errMirrorAbandoned = errors.New("mirror copy abandoned")

// cancelStream fails a stream another goroutine may be blocked on.
func cancelStream(us protocol.ClientStream, err error) {
	switch c := us.(type) {
	case protocol.Aborter:
		c.Abort(err)
	case protocol.Cancelable:
		c.Cancel(err)
	}
}

// run sends the copy and drops the answer.
func (m *shadow) run() {
	cl := m.cl
	defer m.call.End()
	defer m.cancel()
	start := time.Now()
	ok := m.exchange(m.ctx)
	m.mu.Lock()
	m.finished = true
	abandoned := m.abandoned
	m.queue, m.queued = nil, 0
	if m.trailers != nil {
		m.trailers.Recycle()
		m.trailers = nil
	}
	m.mu.Unlock()
	m.req.Recycle()
	switch {
	case ok:
		cl.Stats.RqTime.Observe(float64(time.Since(start).Microseconds()) / 1000)
	case !abandoned:
		m.stats.MirrorFailed.Inc() // (an abandoned copy counted already)
	}
}

// exchange is the copy's one attempt (shadows are not retried).
func (m *shadow) exchange(ctx context.Context) bool {
	cl := m.cl
	hint := upstream.PickHint{Random: rand.Uint64()}
	h := cl.Pick(&hint)
	if h == nil {
		return false
	}
	try := h.Begin()
	defer try.Drop() // an outcome below ends it first
	// failed counts a failure against the host, unless the copy was
	// abandoned or ran out of its time: that says nothing of the host.
	failed := func() bool {
		if ctx.Err() == nil {
			try.End(false)
		}
		return false
	}
	us, conn, err := m.open(ctx, h)
	if err != nil {
		return failed()
	}
	reusable := false
	defer func() {
		m.usMu.Lock()
		m.us = nil
		r := us.Close() && reusable
		m.usMu.Unlock()
		if conn != nil {
			h.Pool().Release(conn, r)
		}
	}()
	m.usMu.Lock()
	m.us = us
	m.usMu.Unlock()
	if ctx.Err() != nil {
		return false // abandoned (or out of time) while connecting
	}
	us.SetDeadline(m.until)
	if err := m.send(ctx, us); err != nil {
		return failed()
	}
	var resp protocol.Headers
	defer resp.Recycle()
	if err := us.ReadHeaders(&resp); err != nil {
		return failed()
	}
	cl.Stats.CountStatus(resp.StatusCode())
	if !us.EndStream() {
		for {
			_, err := us.ReadData()
			if err == io.EOF {
				break
			}
			if err != nil {
				return failed()
			}
		}
	}
	try.End(true)
	reusable = true
	return true
}

// open gets an upstream stream on h, as the primary's openStream does.
func (m *shadow) open(ctx context.Context, h *upstream.Host) (protocol.ClientStream, *upstream.Conn, error) {
	codec, mux := m.cfg.upstreamFor(m.cl, h, m.h2)
	wait := time.Until(m.until)
	if codec.NewMux != nil {
		us, _, err := mux.NewStream(ctx, wait)
		return us, nil, err
	}
	// A body cannot be sent twice: a pooled connection is probed first,
	// as the primary does for requests it may not replay.
	reuse := upstream.ReuseAny
	m.mu.Lock()
	if !m.ended || m.queued > 0 || m.trailers != nil {
		reuse = upstream.ReuseChecked
	}
	m.mu.Unlock()
	conn, err := h.Pool().Acquire(ctx, wait, reuse)
	if errors.Is(err, upstream.ErrProtocolSwitched) {
		return m.open(ctx, h)
	}
	if err != nil {
		return nil, nil, err
	}
	return codec.NewClient(conn), conn, nil
}

// send writes the headers, then the body as the primary hands it over.
func (m *shadow) send(ctx context.Context, us protocol.ClientStream) error {
	m.mu.Lock()
	headersOnly := m.ended && m.queued == 0 && m.trailers == nil
	m.mu.Unlock()
	if err := us.WriteHeaders(&m.req, headersOnly); err != nil || headersOnly {
		return err
	}
	for {
		m.mu.Lock()
		q, ended, tr, gone := m.queue, m.ended, m.trailers, m.abandoned
		m.queue, m.inflight, m.queued = nil, m.queued, 0
		m.mu.Unlock()
		if gone {
			return errMirrorAbandoned
		}
		for i, b := range q {
			last := ended && tr == nil && i == len(q)-1
			if err := us.WriteData(b, last); err != nil {
				return err
			}
			if last {
				return nil
			}
		}
		m.mu.Lock()
		m.inflight = 0
		m.mu.Unlock()
		if ended {
			if tr != nil {
				return us.WriteTrailers(tr)
			}
			return us.WriteData(nil, true)
		}
		select {
		case <-m.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
