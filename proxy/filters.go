package proxy

import (
	"sync"
	"sync/atomic"
	"time"

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
	// offKnown, offVal: the route's decision, made once per stream.
	offKnown, offVal bool
	resumed          filter.Resumed
	// held, eheld: body a buffering filter kept (StopAndBuffer).
	held, eheld []byte
	dh          filter.DecoderHeaders
	dd          filter.DecoderData
	dt          filter.DecoderTrailers
	eh          filter.EncoderHeaders
	ed          filter.EncoderData
	et          filter.EncoderTrailers
	destroy     filter.Destroyer
}

// chainState is a stream's filter state that holds pointers.
type chainState struct {
	chain      []slot
	replace    *localReplySpec // an encoder's reply (respond sends it)
	pending    *localReplySpec // a data filter's reply (forward sends it)
	edit       func(h *protocol.Headers)
	resumeHook filter.Resumed // the stopped filter to call on resume
	cur        *slot          // the filter being called
	parkTimer  *time.Timer    // bounds the current park
	// dataBuf, encBuf hand pieces of body to the filters.
	dataBuf, encBuf filter.Buffer
	// mu: the body pump's decoders and the worker's encoders never run
	// at once (one filter callback at a time, as the contract says).
	mu sync.Mutex
}

// reset clears the state for the next stream, keeping its buffers.
func (fx *chainState) reset() {
	if fx.parkTimer != nil {
		fx.parkTimer.Stop()
	}
	for i := range fx.chain {
		fx.chain[i] = slot{}
	}
	*fx = chainState{chain: fx.chain[:0]}
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
		sl.resumed, _ = inst.(filter.Resumed)
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
	if sl.offKnown {
		return sl.offVal
	}
	sl.offKnown = true
	sl.offVal = s.routeOff(sl)
	return sl.offVal
}

func (s *Stream) routeOff(sl *slot) bool {
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
	filtersGone // the client left while a filter held the request
)

// decodeFilters runs the decoders' DecodeHeaders from the next filter on
// (after the OnResume of a filter that asked for it).
func (s *Stream) decodeFilters() int {
	end := s.ds.HeadersOnly()
	if r := s.fx.resumeHook; r != nil {
		s.fx.resumeHook = nil
		s.fx.cur = &s.fx.chain[s.fi-1]
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
		s.fx.cur = sl
		if res := s.settle(sl.dh.DecodeHeaders(s, s.req, end), sl.resumed); res != filtersDone {
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
		switch s.parkNow(r) {
		case parkedNow:
			return filtersParked
		case clientOff:
			return filtersGone
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
	s.fx.mu.Lock()
	defer s.fx.mu.Unlock()
	s.encoding = true
	for i := s.encN - 1; i >= 0; i-- {
		sl := &s.fx.chain[i]
		if sl.eh != nil && !s.off(sl) {
			s.fx.cur = sl
			sl.eh.EncodeHeaders(s, h, end)
		}
	}
	s.encoding = false
}

// decodeData passes a piece of request body through the data filters
// (end: the body ends with it). It returns what goes upstream now; a
// filter that buffers (StopAndBuffer) keeps what reached it and gets it
// back in front of the next piece, so nothing goes on until it lets go.
// flush (trailers came): kept data goes on whatever the filters say. ok
// is false when a filter replied or the buffer limit was passed (413).
func (s *Stream) decodeData(data []byte, end, flush bool) ([]byte, bool) {
	fx := s.fx
	fx.mu.Lock()
	defer fx.mu.Unlock()
	s.inData = true
	defer func() { s.inData = false }()
	buf := &fx.dataBuf
	buf.B = data
	for i := 0; i < s.encN && i < len(fx.chain); i++ {
		sl := &fx.chain[i]
		if sl.dd == nil || s.off(sl) {
			continue
		}
		if len(sl.held) > 0 {
			buf.B = append(sl.held, buf.B...)
			sl.held = sl.held[:0]
		}
		s.fx.cur = sl
		st := sl.dd.DecodeData(s, buf, end)
		if s.replied {
			s.encN = i // the reply passes the encoders before the caller
			return nil, false
		}
		if st == filter.StopAndBuffer && !end && !flush {
			if len(buf.B) > s.BufferLimit() {
				s.info.ResponseCodeDetails = "request_payload_too_large"
				s.SendLocalReply(413, "Payload Too Large", nil)
				return nil, false
			}
			sl.held = append(sl.held[:0], buf.B...)
			return nil, true
		}
	}
	return buf.B, true
}

// decodeTrailers passes the request trailers through the decoders.
func (s *Stream) decodeTrailers(t *protocol.Headers) bool {
	s.fx.mu.Lock()
	defer s.fx.mu.Unlock()
	s.inData = true
	defer func() { s.inData = false }()
	for i := 0; i < s.encN && i < len(s.fx.chain); i++ {
		sl := &s.fx.chain[i]
		if sl.dt != nil && !s.off(sl) {
			s.fx.cur = sl
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
// filter first, buffering as decodeData does; ok is false when a filter
// passed the buffer limit or replied (the response went out already: the
// stream is reset).
func (s *Stream) encodeData(data []byte, end, flush bool) ([]byte, bool) {
	fx := s.fx
	fx.mu.Lock()
	defer fx.mu.Unlock()
	s.encoding = true
	defer func() { s.encoding = false }()
	buf := &fx.encBuf
	buf.B = data
	for i := s.encN - 1; i >= 0; i-- {
		sl := &fx.chain[i]
		if sl.ed == nil || s.off(sl) {
			continue
		}
		if len(sl.eheld) > 0 {
			buf.B = append(sl.eheld, buf.B...)
			sl.eheld = sl.eheld[:0]
		}
		s.fx.cur = sl
		st := sl.ed.EncodeData(s, buf, end)
		if fx.replace != nil {
			return nil, false
		}
		if st == filter.StopAndBuffer && !end && !flush {
			if len(buf.B) > s.BufferLimit() {
				return nil, false
			}
			sl.eheld = append(sl.eheld[:0], buf.B...)
			return nil, true
		}
	}
	return buf.B, true
}

// encodeTrailers passes the response trailers through the encoders.
func (s *Stream) encodeTrailers(t *protocol.Headers) {
	s.fx.mu.Lock()
	defer s.fx.mu.Unlock()
	s.encoding = true
	defer func() { s.encoding = false }()
	for i := s.encN - 1; i >= 0; i-- {
		sl := &s.fx.chain[i]
		if sl.et != nil && !s.off(sl) {
			s.fx.cur = sl
			sl.et.EncodeTrailers(s, t)
		}
	}
}

// Parking. A stream's park word holds a generation, a "client gone" bit
// and a state. The generation moves on at each park that ends and at
// release, so a Continuation (which carries the generation it was taken
// in) resumes only the park it was made for.
const (
	parkRunning = iota
	parkParked
	parkEarly // Continue came before the filter returned Stop

	parkGone     = 1 << 2 // the client left
	parkTimedOut = 1 << 3 // the wait outlasted the request's time
	parkShift    = 4
)

// parkCtl is a Stream's park word, kept apart from the Stream's fields
// (which are reset by plain assignment) so that late Continues and the
// client leaving read it atomically.
type parkCtl struct {
	word atomic.Uint64
	s    *Stream
}

func (p *parkCtl) gen() uint64 { return p.word.Load() >> parkShift }

// Resume implements filter.Resumer.
func (p *parkCtl) Resume(gen uint64) {
	for {
		w := p.word.Load()
		if w>>parkShift != gen {
			return // a late Continue: that park ended, or the stream did
		}
		switch w & 3 {
		case parkRunning:
			if p.word.CompareAndSwap(w, w|parkEarly) {
				return
			}
		case parkParked:
			if p.word.CompareAndSwap(w, (gen+1)<<parkShift|w&parkGone|parkRunning) {
				p.s.cfg.Pool.Run(p.s)
				return
			}
		default:
			return
		}
	}
}

// timeout ends the park gen when it lasted too long (the connection
// manager's request_timeout, else stream_idle_timeout): the stream
// resumes with the timed-out bit and answers 408.
func (p *parkCtl) timeout(gen uint64) {
	w := p.word.Load()
	if w>>parkShift == gen && w&3 == parkParked &&
		p.word.CompareAndSwap(w, (gen+1)<<parkShift|w&parkGone|parkTimedOut|parkRunning) {
		p.s.cfg.Pool.Run(p.s)
	}
}

// timedOut reports (and clears) the timed-out bit, on the worker.
func (p *parkCtl) timedOut() bool {
	for {
		w := p.word.Load()
		if w&parkTimedOut == 0 {
			return false
		}
		if p.word.CompareAndSwap(w, w&^parkTimedOut) {
			return true
		}
	}
}

// clientLeft marks the word and resumes a parked stream (clientGone).
func (p *parkCtl) clientLeft() {
	for {
		w := p.word.Load()
		nw := w | parkGone
		parked := w&3 == parkParked
		if parked {
			nw = (w>>parkShift+1)<<parkShift | parkGone | parkRunning
		}
		if p.word.CompareAndSwap(w, nw) {
			if parked {
				p.s.cfg.Pool.Run(p.s)
			}
			return
		}
	}
}

// The results of parkNow.
const (
	parkedNow = iota
	goOn      // the filter continued already
	clientOff // the client left
)

// parkNow parks the stream after a filter returned Stop; r is the
// filter's OnResume (set before the stream is published to another
// worker).
func (s *Stream) parkNow(r filter.Resumed) int {
	p := s.park
	s.parked = true
	if c, ok := s.ds.(protocol.Canceler); ok {
		c.OnCancel(s.cancelFn) // the client leaving ends the wait
	}
	s.fx.resumeHook = r
	for {
		w := p.word.Load()
		switch {
		case w&parkGone != 0:
			s.fx.resumeHook = nil
			s.unwatchPark()
			s.stopParkTimer()
			return clientOff
		case w&3 == parkEarly:
			p.word.Store((w>>parkShift+1)<<parkShift | parkRunning)
			s.fx.resumeHook = nil
			s.unwatchPark()
			s.stopParkTimer()
			return goOn
		}
		if d := s.parkLimit(); d > 0 && s.fx.parkTimer == nil {
			// Armed before the stream is published; a resume stops it,
			// and a late firing finds another generation.
			gen := w >> parkShift
			s.fx.parkTimer = time.AfterFunc(d, func() { p.timeout(gen) })
		}
		if p.word.CompareAndSwap(w, w&^3|parkParked) {
			// Parked: from here another worker may run the stream;
			// nothing touches it any more on this one.
			return parkedNow
		}
	}
}

// parkLimit bounds a park: the request's timeout, else the stream idle
// timeout (0: none).
func (s *Stream) parkLimit() time.Duration {
	if d := s.cfg.RequestTimeout; d > 0 {
		return d
	}
	return s.cfg.StreamIdleTimeout
}

// stopParkTimer ends a park's bound, on the worker that resumed it.
func (s *Stream) stopParkTimer() {
	if fx := s.fx; fx != nil && fx.parkTimer != nil {
		fx.parkTimer.Stop()
		fx.parkTimer = nil
	}
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

// ClearRouteCache implements filter.Callbacks. Once the request is
// routed, the route stays (as Envoy: a cleared cache after routing does
// not re-route).
func (s *Stream) ClearRouteCache() {
	if !s.routed {
		s.routeCached, s.route = false, nil
	}
}

// PerRoute implements filter.Callbacks: the config the route gives the
// calling filter, by the name it has in http_filters.
func (s *Stream) PerRoute() any {
	r := s.cachedRoute()
	if r == nil || s.fx == nil || s.fx.cur == nil {
		return nil
	}
	v := r.PerFilterConfig[s.fx.cur.name]
	if v == router.FilterDisabled || v == router.FilterEnabled {
		return nil
	}
	return v
}

// Continuation implements filter.Callbacks.
func (s *Stream) Continuation() filter.Continuation {
	return filter.Continuation{R: s.park, Gen: s.park.gen()}
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

// LimitResponseRate implements filter.Callbacks (respond.go paces).
func (s *Stream) LimitResponseRate(bytesPerSecond int64) { s.respRate = bytesPerSecond }

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
