// Package stats holds the process's counters, gauges and histograms. Every
// metric is created once, at config time, and the data path holds a pointer
// to it: an increment is one atomic add, with no map lookup and no lock.
//
// A metric has an Envoy-style dotted name ("cluster.backend.upstream_rq_total")
// for the text and JSON formats, and a Prometheus name with labels
// ("envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"}") derived
// from the tags of the Scope that made it, as Envoy's tag extraction does.
package stats

import (
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Counter only goes up.
type Counter struct {
	v atomic.Uint64
	m meta
}

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value reads the counter.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge goes up and down.
type Gauge struct {
	v atomic.Int64
	m meta
}

// Inc adds one.
func (g *Gauge) Inc() { g.v.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.Add(-1) }

// Add adds n, which may be negative.
func (g *Gauge) Add(n int64) { g.v.Add(n) }

// Set stores n.
func (g *Gauge) Set(n int64) { g.v.Store(n) }

// Value reads the gauge.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Bounds are the upper bounds of histogram buckets in milliseconds, Envoy's
// defaults.
var Bounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Histogram counts observations in milliseconds into fixed buckets.
type Histogram struct {
	buckets [20]atomic.Uint64 // len(Bounds)+1, the last is +Inf
	count   atomic.Uint64
	sumUs   atomic.Uint64 // sum in microseconds
	m       meta
}

// Observe records one value in milliseconds.
func (h *Histogram) Observe(ms float64) {
	i := sort.SearchFloat64s(Bounds, ms)
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sumUs.Add(uint64(math.Max(0, ms*1000)))
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// SumMs returns the sum of observations in milliseconds.
func (h *Histogram) SumMs() float64 { return float64(h.sumUs.Load()) / 1000 }

// Cumulative returns the cumulative count per bucket of Bounds, then +Inf.
func (h *Histogram) Cumulative() []uint64 {
	out := make([]uint64, len(h.buckets))
	var acc uint64
	for i := range h.buckets {
		acc += h.buckets[i].Load()
		out[i] = acc
	}
	return out
}

// Quantile estimates quantile q (0..1) by linear interpolation in buckets.
func (h *Histogram) Quantile(q float64) float64 {
	cum := h.Cumulative()
	total := cum[len(cum)-1]
	if total == 0 {
		return math.NaN()
	}
	rank := q * float64(total)
	lower := 0.0
	var prev uint64
	for i, c := range cum {
		if float64(c) >= rank {
			upper := lower * 2
			if i < len(Bounds) {
				upper = Bounds[i]
			}
			inBucket := float64(c - prev)
			if inBucket == 0 {
				return upper
			}
			return lower + (upper-lower)*(rank-float64(prev))/inBucket
		}
		prev = c
		if i < len(Bounds) {
			lower = Bounds[i]
		}
	}
	return lower
}

type meta struct {
	name     string // dotted
	promName string
	labels   []Label
}

// Label is one Prometheus label.
type Label struct{ Name, Value string }

// Store owns every metric of the process. Metrics are kept once created,
// so that a config reload finds and keeps the same counters, until their
// scope is forgotten (Scope.Forget: a cluster removed for good).
type Store struct {
	mu    sync.Mutex
	ctrs  map[string]*Counter
	gs    map[string]*Gauge
	hists map[string]*Histogram
	funcs map[string]*funcStat
	// carried are counter values a previous process (hot restart) had,
	// added to each counter as it is made.
	carried map[string]uint64
}

// funcStat is a value read when stats are read (a pool's size, a
// reactor's event count), for figures kept elsewhere.
type funcStat struct {
	m       meta
	f       func() int64
	counter bool
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{ctrs: map[string]*Counter{}, gs: map[string]*Gauge{}, hists: map[string]*Histogram{}, funcs: map[string]*funcStat{}}
}

// Scope names metrics: a dotted prefix and the labels that the prefix's
// variable part becomes in Prometheus.
type Scope struct {
	store  *Store
	prefix string // "cluster.backend."
	prom   string // "envoy_cluster_"
	labels []Label
}

// Root returns the scope with no prefix; Prometheus names get "envoy_".
func (s *Store) Root() *Scope { return &Scope{store: s, prom: "envoy_"} }

// Scope returns a child scope: "kind.value." in text, and in Prometheus the
// name part kind with the label tag=value ("cluster", "envoy_cluster_name",
// "backend"). An empty tag appends both parts to the name as plain text.
func (sc *Scope) Scope(kind, tag, value string) *Scope {
	n := &Scope{store: sc.store, prefix: sc.prefix + kind + ".", prom: sc.prom + sanitize(kind) + "_"}
	n.labels = append([]Label(nil), sc.labels...)
	if tag == "" {
		if value != "" {
			n.prefix += value + "."
			n.prom += sanitize(value) + "_"
		}
		return n
	}
	n.prefix += value + "."
	n.labels = append(n.labels, Label{tag, value})
	return n
}

// Counter returns the counter name in this scope, creating it once.
func (sc *Scope) Counter(name string) *Counter {
	full := sc.prefix + name
	sc.store.mu.Lock()
	defer sc.store.mu.Unlock()
	if c, ok := sc.store.ctrs[full]; ok {
		return c
	}
	c := &Counter{m: sc.meta(name)}
	if v, ok := sc.store.carried[full]; ok {
		c.v.Add(v)
		delete(sc.store.carried, full)
	}
	sc.store.ctrs[full] = c
	return c
}

// Counters returns every counter's value by dotted name (what a hot
// restart hands the next process).
func (s *Store) Counters() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.ctrs)+len(s.carried))
	for name, c := range s.ctrs {
		out[name] = c.Value()
	}
	for name, v := range s.carried { // carried from before, not made yet
		out[name] += v
	}
	return out
}

// ResetCounters sets every counter to zero, and forgets the counts
// carried from a previous process for counters not made yet (the
// admin's /reset_counters). Counters computed by a function
// (CounterFunc), gauges and histograms are left as they are.
func (s *Store) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.ctrs {
		c.v.Store(0)
	}
	s.carried = nil
}

// CarryOver adds a previous process's counter values (hot restart): to
// the counters that exist now, and to the others as they are made.
func (s *Store) CarryOver(vals map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.carried == nil {
		s.carried = map[string]uint64{}
	}
	for name, v := range vals {
		if c, ok := s.ctrs[name]; ok {
			c.v.Add(v)
		} else {
			s.carried[name] += v
		}
	}
}

// Gauge returns the gauge name in this scope, creating it once.
func (sc *Scope) Gauge(name string) *Gauge {
	full := sc.prefix + name
	sc.store.mu.Lock()
	defer sc.store.mu.Unlock()
	if g, ok := sc.store.gs[full]; ok {
		return g
	}
	g := &Gauge{m: sc.meta(name)}
	sc.store.gs[full] = g
	return g
}

// GaugeFunc registers a gauge whose value f returns when stats are read;
// a later registration of the same name replaces f.
func (sc *Scope) GaugeFunc(name string, f func() int64) { sc.fn(name, f, false) }

// CounterFunc is GaugeFunc for a value that only goes up.
func (sc *Scope) CounterFunc(name string, f func() int64) { sc.fn(name, f, true) }

func (sc *Scope) fn(name string, f func() int64, counter bool) {
	sc.store.mu.Lock()
	defer sc.store.mu.Unlock()
	sc.store.funcs[sc.prefix+name] = &funcStat{m: sc.meta(name), f: f, counter: counter}
}

// Histogram returns the histogram name in this scope, creating it once.
func (sc *Scope) Histogram(name string) *Histogram {
	full := sc.prefix + name
	sc.store.mu.Lock()
	defer sc.store.mu.Unlock()
	if h, ok := sc.store.hists[full]; ok {
		return h
	}
	h := &Histogram{m: sc.meta(name)}
	sc.store.hists[full] = h
	return h
}

// Forget removes every metric of sc and its child scopes from the store
// (they stop being listed; whoever still holds one may go on counting
// into it). A scope is told from a sibling whose name extends its own
// ("c1" and "c1.x") by its labels: a metric belongs to sc when its name
// has sc's prefix and its labels begin with sc's.
func (sc *Scope) Forget() {
	s := sc.store
	s.mu.Lock()
	defer s.mu.Unlock()
	forget(s.ctrs, sc, func(c *Counter) meta { return c.m })
	forget(s.gs, sc, func(g *Gauge) meta { return g.m })
	forget(s.hists, sc, func(h *Histogram) meta { return h.m })
	forget(s.funcs, sc, func(f *funcStat) meta { return f.m })
}

func forget[T any](m map[string]T, sc *Scope, metaOf func(T) meta) {
	for name, v := range m {
		if sc.owns(metaOf(v)) {
			delete(m, name)
		}
	}
}

func (sc *Scope) owns(m meta) bool {
	return strings.HasPrefix(m.name, sc.prefix) && len(m.labels) >= len(sc.labels) && slices.Equal(m.labels[:len(sc.labels)], sc.labels)
}

// meta derives the Prometheus form. Response-class counters
// ("downstream_rq_2xx") become "downstream_rq_xx" with the label
// envoy_response_code_class="2", as Envoy exports them.
func (sc *Scope) meta(name string) meta {
	m := meta{name: sc.prefix + name, labels: sc.labels}
	base := name
	if n := len(name); n >= 4 && name[n-2:] == "xx" && name[n-3] >= '1' && name[n-3] <= '5' && name[n-4] == '_' {
		base = name[:n-3] + "xx"
		m.labels = append(append([]Label(nil), sc.labels...), Label{"envoy_response_code_class", name[n-3 : n-2]})
	}
	m.promName = sc.prom + sanitize(base)
	return m
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}
