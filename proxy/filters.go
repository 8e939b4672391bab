package proxy

import (
	"sync/atomic"

	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
)

// The stream filter engine (docs/design/filters.md): a stream's filter
// instances, their phases, parking a stream a filter stopped, the route
// cache and the filters' callbacks (*Stream implements filter.Callbacks).

// HTTPFilter is one link of a connection manager's filter chain.
type HTTPFilter struct {
	Name    string
	Factory filter.HTTPFactory
	// DisabledByDefault: the filter runs only on routes whose
	// typed_per_filter_config names it (HttpFilter.disabled).
	DisabledByDefault bool
}

// slot is one filter instance of a stream, with its phases.
type slot struct {
	name       string
	defaultOff bool
	dh         filter.DecoderHeaders
	dd         filter.DecoderData
	dt         filter.DecoderTrailers
	eh         filter.EncoderHeaders
	ed         filter.EncoderData
	et         filter.EncoderTrailers
	destroy    filter.Destroyer
}

// chainState is a stream's filter state that holds pointers.
type chainState struct {
	chain      []slot
	replace    *localReplySpec // an encoder's reply (respond sends it)
	pending    *localReplySpec // a data filter's reply (forward sends it)
	edit       func(h *protocol.Headers)
	resumeHook filter.Resumed // the stopped filter to call on resume
	bufs       bodyBufs
}

// reset clears the state for the next stream, keeping its buffers.
func (fx *chainState) reset() {
	for i := range fx.chain {
		fx.chain[i] = slot{}
	}
	*fx = chainState{chain: fx.chain[:0], bufs: bodyBufs{dbuf: fx.bufs.dbuf[:0], ebuf: fx.bufs.ebuf[:0]}}
}

// newFilters makes the stream's filter instances.
func (s *Stream) newFilters() {
	if s.fx == nil {
		s.fx = &chainState{}
	}
	for i := range s.cfg.Filters {
		f := &s.cfg.Filters[i]
		inst := f.Factory.New()
		sl := slot{name: f.Name, defaultOff: f.DisabledByDefault}
		sl.dh, _ = inst.(filter.DecoderHeaders)
		sl.dd, _ = inst.(filter.DecoderData)
		sl.dt, _ = inst.(filter.DecoderTrailers)
		sl.eh, _ = inst.(filter.EncoderHeaders)
		sl.ed, _ = inst.(filter.EncoderData)
		sl.et, _ = inst.(filter.EncoderTrailers)
		sl.destroy, _ = inst.(filter.Destroyer)
		s.anyData = s.anyData || sl.dd != nil || sl.dt != nil
		s.anyEncData = s.anyEncData || sl.ed != nil || sl.et != nil
		s.fx.chain = append(s.fx.chain, sl)
	}
}

// destroyFilters tells every instance the stream ended.
func (s *Stream) destroyFilters() {
	for i := range s.fx.chain {
		if d := s.fx.chain[i].destroy; d != nil {
			d.OnDestroy()
		}
	}
}

// off reports whether the route disables the filter (or does not enable
// a filter disabled by default).
func (s *Stream) off(sl *slot) bool {
	r := s.cachedRoute()
	var v any
	if r != nil {
		v = r.PerFilterConfig[sl.name]
	}
	if v == router.FilterDisabled {
		return true
	}
	return sl.defaultOff && v == nil
}

// The results of decodeFilters.
const (
	filtersDone = iota
	filtersParked
	filtersReplied
)

// decodeFilters runs the decoders' DecodeHeaders from the next filter on
// (after the OnResume of a filter that asked for it).
func (s *Stream) decodeFilters() int {
	end := s.ds.HeadersOnly()
	if r := s.fx.resumeHook; r != nil {
		s.fx.resumeHook = nil
		if res := s.settle(r.OnResume(s), r); res != filtersDone {
			return res
		}
	}
	for s.fi < len(s.fx.chain) {
		sl := &s.fx.chain[s.fi]
		s.fi++
		if sl.dh == nil || s.off(sl) {
			continue
		}
		r, _ := sl.dh.(filter.Resumed)
		if res := s.settle(sl.dh.DecodeHeaders(s, s.req, end), r); res != filtersDone {
			return res
		}
	}
	s.encN = len(s.fx.chain)
	return filtersDone
}

// settle acts on a headers callback's status: a reply ends the chain; a
// Stop parks the stream (r, when the filter has OnResume, runs when it
// resumes; at once if the filter continued already).
func (s *Stream) settle(st filter.Status, r filter.Resumed) int {
	for {
		if s.replied {
			return filtersReplied
		}
		if st != filter.Stop {
			return filtersDone
		}
		if s.parkNow() {
			s.fx.resumeHook = r
			return filtersParked
		}
		if r == nil {
			return filtersDone
		}
		st = r.OnResume(s)
	}
}

// encodeHeaders runs the encoders' EncodeHeaders, last filter first, over
// the filters whose decoders ran.
func (s *Stream) encodeHeaders(h *protocol.Headers, end bool) {
	if s.encoding {
		return
	}
	s.encoding = true
	for i := s.encN - 1; i >= 0; i-- {
		sl := &s.fx.chain[i]
		if sl.eh != nil && !s.off(sl) {
			sl.eh.EncodeHeaders(s, h, end)
		}
	}
	s.encoding = false
}

// decodeData passes a piece of request body through the data filters
// (end: the body ends with it). It returns what goes upstream now; a
// filter that buffers makes it return nothing until it lets go. ok is
// false when a filter replied or the buffer limit was passed.
func (s *Stream) decodeData(data []byte, end bool) ([]byte, bool) {
	b := s.bodyState()
	buf := &b.dataBuf
	buf.B = data
	for i := 0; i < s.encN && i < len(s.fx.chain); i++ {
		sl := &s.fx.chain[i]
		if sl.dd == nil || s.off(sl) {
			continue
		}
		if i == b.dbufAt-1 {
			// This filter is buffering: it gets what it kept and the new
			// piece.
			b.dbuf = append(b.dbuf, buf.B...)
			buf.B = b.dbuf
		}
		st := sl.dd.DecodeData(s, buf, end)
		if s.replied {
			s.encN = i // the reply passes the encoders before the caller
			return nil, false
		}
		if st == filter.StopAndBuffer && !end {
			if i != b.dbufAt-1 {
				b.dbuf = append(b.dbuf[:0], buf.B...)
				b.dbufAt = i + 1
			} else {
				b.dbuf = buf.B
			}
			if len(b.dbuf) > s.BufferLimit() {
				s.SendLocalReply(413, "Payload Too Large", nil)
				return nil, false
			}
			return nil, true
		}
		if i == b.dbufAt-1 {
			b.dbufAt = 0
		}
	}
	return buf.B, true
}

// bodyBufs is the data filters' buffering state.
type bodyBufs struct {
	dataBuf, encBuf filter.Buffer
	dbuf, ebuf      []byte
	// dbufAt, ebufAt: 1 + the index of the filter buffering (0: none).
	dbufAt, ebufAt int
}

// bodyState returns the stream's buffering state.
func (s *Stream) bodyState() *bodyBufs { return &s.fx.bufs }

// decodeTrailers passes the request trailers through the decoders.
func (s *Stream) decodeTrailers(t *protocol.Headers) bool {
	for i := 0; i < s.encN && i < len(s.fx.chain); i++ {
		sl := &s.fx.chain[i]
		if sl.dt != nil && !s.off(sl) {
			sl.dt.DecodeTrailers(s, t)
			if s.replied {
				s.encN = i
				return false
			}
		}
	}
	return true
}

// encodeData passes a piece of response body through the encoders, last
// filter first; like decodeData, a buffering filter holds it back. ok is
// false when the buffer limit was passed.
func (s *Stream) encodeData(data []byte, end bool) ([]byte, bool) {
	b := s.bodyState()
	buf := &b.encBuf
	buf.B = data
	for i := s.encN - 1; i >= 0; i-- {
		sl := &s.fx.chain[i]
		if sl.ed == nil || s.off(sl) {
			continue
		}
		if i == b.ebufAt-1 {
			b.ebuf = append(b.ebuf, buf.B...)
			buf.B = b.ebuf
		}
		if sl.ed.EncodeData(s, buf, end) == filter.StopAndBuffer && !end {
			if i != b.ebufAt-1 {
				b.ebuf = append(b.ebuf[:0], buf.B...)
				b.ebufAt = i + 1
			} else {
				b.ebuf = buf.B
			}
			if len(b.ebuf) > s.BufferLimit() {
				return nil, false
			}
			return nil, true
		}
		if i == b.ebufAt-1 {
			b.ebufAt = 0
		}
	}
	return buf.B, true
}

// encodeTrailers passes the response trailers through the encoders.
func (s *Stream) encodeTrailers(t *protocol.Headers) {
	for i := s.encN - 1; i >= 0; i-- {
		sl := &s.fx.chain[i]
		if sl.et != nil && !s.off(sl) {
			sl.et.EncodeTrailers(s, t)
		}
	}
}

// Parking. A stream's park word holds its generation (bumped each time
// the pooled Stream is reused) and its state.
const (
	parkRunning = iota
	parkParked
	parkEarly // Continue came before the filter returned Stop
)

// parkCtl is a Stream's park word, kept apart from the Stream's fields
// (which are reset by plain assignment) so that late Continues read it
// atomically.
type parkCtl struct {
	word atomic.Uint64
	s    *Stream
}

// Resume implements filter.Resumer.
func (p *parkCtl) Resume(gen uint64) {
	for {
		w := p.word.Load()
		if w>>2 != gen {
			return // the stream ended: a late Continue
		}
		switch w & 3 {
		case parkRunning:
			if p.word.CompareAndSwap(w, gen<<2|parkEarly) {
				return
			}
		case parkParked:
			if p.word.CompareAndSwap(w, gen<<2|parkRunning) {
				p.s.cfg.Pool.Run(p.s)
				return
			}
		default:
			return
		}
	}
}

// unpark resumes a parked stream whose client left (from clientGone).
func (p *parkCtl) unpark() {
	w := p.word.Load()
	if w&3 == parkParked && p.word.CompareAndSwap(w, w&^3|parkRunning) {
		p.s.cfg.Pool.Run(p.s)
	}
}

// parkNow parks the stream after a filter returned Stop; false: it goes
// on at once (the filter continued already, or the client left).
func (s *Stream) parkNow() bool {
	p := s.park
	gen := p.word.Load() >> 2
	s.parked = true
	if c, ok := s.ds.(protocol.Canceler); ok {
		c.OnCancel(s.cancelFn) // the client leaving ends the wait
	}
	if !p.word.CompareAndSwap(gen<<2|parkRunning, gen<<2|parkParked) {
		p.word.Store(gen<<2 | parkRunning) // continued early
		s.unwatchPark()
		return false
	}
	// Parked: from here another worker may run the stream; nothing below
	// touches it unless this CAS takes it back.
	if s.gone.Load() && p.word.CompareAndSwap(gen<<2|parkParked, gen<<2|parkRunning) {
		s.unwatchPark()
		return false
	}
	return true
}

// unwatchPark ends the cancel hook of a parked stream, on its worker.
func (s *Stream) unwatchPark() {
	if !s.parked {
		return
	}
	s.parked = false
	if c, ok := s.ds.(protocol.Canceler); ok {
		c.OnCancel(nil)
	}
}

// The route cache.

// cachedRoute matches the route once (until ClearRouteCache).
func (s *Stream) cachedRoute() *router.Route {
	if !s.routeCached {
		s.routeCached = true
		s.route = s.matchRoute()
	}
	return s.route
}

// matchRoute matches the request in the current route table (scoped
// routes included); nil when nothing matches.
func (s *Stream) matchRoute() *router.Route {
	var t *router.Table
	if sc := s.cfg.Scopes; sc != nil {
		if scopes := sc.Load(); scopes != nil {
			t = scopes.Table(s.req)
		}
	} else {
		t = s.cfg.Routes.Load()
	}
	s.table = t
	if t == nil {
		return nil
	}
	return t.MatchRandom(s.req, s.random)
}

// filter.Callbacks

// Info implements filter.Callbacks.
func (s *Stream) Info() *filter.StreamInfo { return &s.info }

// RouteName implements filter.Callbacks.
func (s *Stream) RouteName() string {
	if r := s.cachedRoute(); r != nil {
		return r.Name
	}
	return ""
}

// ClusterName implements filter.Callbacks.
func (s *Stream) ClusterName() string {
	if r := s.cachedRoute(); r != nil && r.DirectResponse == nil && r.Redirect == nil {
		return r.PickCluster(s.random)
	}
	return ""
}

// ClearRouteCache implements filter.Callbacks.
func (s *Stream) ClearRouteCache() { s.routeCached, s.route = false, nil }

// PerRoute implements filter.Callbacks.
func (s *Stream) PerRoute(name string) any {
	r := s.cachedRoute()
	if r == nil {
		return nil
	}
	v := r.PerFilterConfig[name]
	if v == router.FilterDisabled || v == router.FilterEnabled {
		return nil
	}
	return v
}

// Continuation implements filter.Callbacks.
func (s *Stream) Continuation() filter.Continuation {
	return filter.Continuation{R: s.park, Gen: s.park.word.Load() >> 2}
}

// SendLocalReply implements filter.Callbacks.
func (s *Stream) SendLocalReply(status int, body string, edit func(h *protocol.Headers)) {
	if s.replied {
		return
	}
	if s.encoding {
		// From an encoder: the upstream's response is replaced (respond
		// checks), or the stream reset if it went out already.
		s.fx.replace = &localReplySpec{status: status, body: body, edit: edit}
		return
	}
	if s.inData {
		// From a data filter, maybe on the body pump's goroutine: the
		// worker sends it once the attempt has ended (forward).
		s.replied = true
		s.fx.pending = &localReplySpec{status: status, body: body, edit: edit}
		return
	}
	s.replied = true
	if s.fi > 0 && s.fi <= len(s.fx.chain) && s.encN < s.fi {
		// A decoder replied: the encoders of the filters before it see
		// the reply.
		s.encN = s.fi - 1
	}
	s.fx.edit = edit
	s.localReply(status, body, false)
	s.fx.edit = nil
}

// BufferLimit implements filter.Callbacks.
func (s *Stream) BufferLimit() int {
	if n := s.cm.conn.BufferLimit; n > 0 {
		return n
	}
	return 1 << 20
}

// sendPendingReply sends the reply a data filter asked for.
func (s *Stream) sendPendingReply() {
	r := s.fx.pending
	s.fx.pending = nil
	if r == nil {
		return
	}
	s.fx.edit = r.edit
	s.localReply(r.status, r.body, false)
	s.fx.edit = nil
}

// localReplySpec is a reply a filter asked for.
type localReplySpec struct {
	status int
	body   string
	edit   func(h *protocol.Headers)
}
