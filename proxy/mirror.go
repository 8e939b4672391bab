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
	stats *Stats
	req   protocol.Headers
	h2    bool
	// until bounds the whole exchange: the route timeout, else the
	// stream idle timeout.
	until time.Time
	limit int

	mu        sync.Mutex
	wake      chan struct{} // a send or abandon happened (cap 1)
	queue     [][]byte
	queued    int
	ended     bool // the request's end has been offered
	trailers  *protocol.Headers
	abandoned bool
	us        protocol.ClientStream // set while open, for abandon
}

// startMirrors starts a shadow per sampled policy of the route.
func (s *Stream) startMirrors() {
	for i, p := range s.route.Mirrors {
		if !p.Sampled(s.random ^ uint64(i+1)*0xbf58476d1ce4e5b9) {
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
		if !cl.Breaker.AcquireRequest() {
			cl.Stats.RqOverflow.Inc()
			st.MirrorFailed.Inc()
			continue
		}
		st.MirrorTotal.Inc()
		m := &shadow{cl: cl, stats: st, h2: s.h2, limit: s.BufferLimit(), wake: make(chan struct{}, 1)}
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
		ended := m.ended
		m.mu.Unlock()
		if !ended {
			m.abandon()
		}
	}
	s.mirrors = nil
}

func (m *shadow) offer(data []byte, end bool, trailers *protocol.Headers) {
	m.mu.Lock()
	if m.abandoned || m.ended {
		m.mu.Unlock()
		return
	}
	if len(data) > 0 {
		if m.queued+len(data) > m.limit {
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

// abandon gives up the copy: its queue is dropped and its upstream
// stream, if open, reset.
func (m *shadow) abandon() {
	m.mu.Lock()
	if m.abandoned {
		m.mu.Unlock()
		return
	}
	m.abandoned = true
	m.queue, m.queued = nil, 0
	us := m.us
	m.mu.Unlock()
	m.stats.MirrorAbandoned.Inc()
	cancelStream(us, errMirrorAbandoned)
	m.signal()
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
	defer cl.Breaker.ReleaseRequest()
	cl.Stats.RqTotal.Inc()
	cl.Stats.RqActive.Inc()
	defer cl.Stats.RqActive.Dec()
	defer m.req.Recycle()
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), m.until)
	defer cancel()
	ok := m.exchange(ctx)
	if !ok {
		if m.isAbandoned() {
			return // counted as abandoned
		}
		m.stats.MirrorFailed.Inc()
		return
	}
	cl.Stats.RqTime.Observe(float64(time.Since(start).Microseconds()) / 1000)
}

func (m *shadow) isAbandoned() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.abandoned
}

// exchange is the copy's one attempt (shadows are not retried).
func (m *shadow) exchange(ctx context.Context) bool {
	cl := m.cl
	hint := upstream.PickHint{Random: rand.Uint64()}
	h := cl.Pick(&hint)
	if h == nil {
		return false
	}
	h.Active.Add(1)
	h.RqTotal.Add(1)
	defer h.Active.Add(-1)
	us, conn, err := m.open(ctx, h)
	if err != nil {
		h.RqError.Add(1)
		return false
	}
	reusable := false
	defer func() {
		m.mu.Lock()
		m.us = nil
		m.mu.Unlock()
		r := us.Close() && reusable
		if conn != nil {
			h.Pool().Release(conn, r)
		}
	}()
	m.mu.Lock()
	m.us = us
	gone := m.abandoned
	m.mu.Unlock()
	if gone {
		return false
	}
	us.SetDeadline(m.until)
	if err := m.send(ctx, us); err != nil {
		h.RqError.Add(1)
		return false
	}
	var resp protocol.Headers
	defer resp.Recycle()
	if err := us.ReadHeaders(&resp); err != nil {
		h.RqError.Add(1)
		return false
	}
	cl.Stats.CountStatus(resp.StatusCode())
	if !us.EndStream() {
		for {
			_, err := us.ReadData()
			if err == io.EOF {
				break
			}
			if err != nil {
				h.RqError.Add(1)
				return false
			}
		}
	}
	h.RqSuccess.Add(1)
	reusable = true
	return true
}

// open gets an upstream stream on h, as the primary's openStream does.
func (m *shadow) open(ctx context.Context, h *upstream.Host) (protocol.ClientStream, *upstream.Conn, error) {
	codec := m.cl.CodecForHost(h, m.h2)
	wait := time.Until(m.until)
	if codec.NewMux != nil {
		us, _, err := h.Mux().NewStream(ctx, wait)
		return us, nil, err
	}
	conn, err := h.Pool().Acquire(ctx, wait, upstream.ReuseAny)
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
		m.queue, m.queued = nil, 0
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
