package stats

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

type snapshot struct {
	ctrs  []*Counter
	gs    []*Gauge
	hists []*Histogram
}

func (s *Store) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sn snapshot
	for _, c := range s.ctrs {
		sn.ctrs = append(sn.ctrs, c)
	}
	for _, g := range s.gs {
		sn.gs = append(sn.gs, g)
	}
	for _, h := range s.hists {
		sn.hists = append(sn.hists, h)
	}
	for _, fs := range s.funcs {
		v := fs.f()
		if fs.counter {
			c := &Counter{m: fs.m}
			c.v.Store(uint64(v))
			sn.ctrs = append(sn.ctrs, c)
		} else {
			g := &Gauge{m: fs.m}
			g.v.Store(v)
			sn.gs = append(sn.gs, g)
		}
	}
	sort.Slice(sn.ctrs, func(i, j int) bool { return sn.ctrs[i].m.name < sn.ctrs[j].m.name })
	sort.Slice(sn.gs, func(i, j int) bool { return sn.gs[i].m.name < sn.gs[j].m.name })
	sort.Slice(sn.hists, func(i, j int) bool { return sn.hists[i].m.name < sn.hists[j].m.name })
	return sn
}

// Lookup returns the current value of a counter or gauge by its dotted name.
func (s *Store) Lookup(name string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.ctrs[name]; ok {
		return int64(c.Value()), true
	}
	if g, ok := s.gs[name]; ok {
		return g.Value(), true
	}
	if fs, ok := s.funcs[name]; ok {
		return fs.f(), true
	}
	return 0, false
}

// Query selects and shapes what /stats shows.
type Query struct {
	// Filter keeps the names it matches anywhere (nil: all), as Envoy's
	// ?filter= (a regular expression).
	Filter *regexp.Regexp
	// UsedOnly leaves out what was never used: counters and gauges that
	// are 0, histograms without a sample (Envoy's ?usedonly; Envoy also
	// shows a gauge that was set back to 0).
	UsedOnly bool
	// Buckets is Envoy's ?histogram_buckets for the text form: "" or
	// "none" (percentiles), "cumulative" (B<bound>(count of samples
	// ≤ bound)) or "disjoint" (B<bound>(count in the bucket ending at
	// bound)).
	Buckets string
}

func (q Query) keep(name string) bool { return q.Filter == nil || q.Filter.MatchString(name) }

// WriteText writes "name: value" lines, sorted, as Envoy's /stats does.
func (s *Store) WriteText(w io.Writer, q Query) error {
	sn := s.snapshot()
	var b strings.Builder
	type line struct{ name, val string }
	var lines []line
	for _, c := range sn.ctrs {
		if !q.UsedOnly || c.Value() != 0 {
			lines = append(lines, line{c.m.name, strconv.FormatUint(c.Value(), 10)})
		}
	}
	for _, g := range sn.gs {
		if !q.UsedOnly || g.Value() != 0 {
			lines = append(lines, line{g.m.name, strconv.FormatInt(g.Value(), 10)})
		}
	}
	for _, h := range sn.hists {
		if q.UsedOnly && h.Count() == 0 {
			continue
		}
		lines = append(lines, line{h.m.name, histText(h, q.Buckets)})
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].name < lines[j].name })
	for _, l := range lines {
		if !q.keep(l.name) {
			continue
		}
		b.WriteString(l.name)
		b.WriteString(": ")
		b.WriteString(l.val)
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// histText is a histogram's value in the text form.
func histText(h *Histogram, buckets string) string {
	if buckets != "cumulative" && buckets != "disjoint" {
		return fmt.Sprintf("P50(%s) P90(%s) P99(%s) count(%d) sum(%g)",
			fmtQ(h.Quantile(.5)), fmtQ(h.Quantile(.9)), fmtQ(h.Quantile(.99)), h.Count(), h.SumMs())
	}
	var b strings.Builder
	var prev uint64
	for i, c := range h.Cumulative() {
		if i > 0 {
			b.WriteByte(' ')
		}
		bound := "+Inf"
		if i < len(Bounds) {
			bound = strconv.FormatFloat(Bounds[i], 'g', -1, 64)
		}
		v := c
		if buckets == "disjoint" {
			v = c - prev
		}
		prev = c
		fmt.Fprintf(&b, "B%s(%d)", bound, v)
	}
	return b.String()
}

// ValidBuckets reports whether Envoy's ?histogram_buckets value is one
// the text form has.
func ValidBuckets(v string) bool {
	return v == "" || v == "none" || v == "cumulative" || v == "disjoint"
}

func fmtQ(v float64) string {
	if v != v {
		return "nan"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// WriteJSON writes {"stats":[{"name":..,"value":..},...]} as Envoy's
// /stats?format=json does (histograms as count and sum).
func (s *Store) WriteJSON(w io.Writer, q Query) error {
	sn := s.snapshot()
	type stat struct {
		Name  string `json:"name"`
		Value any    `json:"value"`
	}
	var out struct {
		Stats []stat `json:"stats"`
		// HistogramBounds are the buckets' upper bounds (ms); each
		// histogram's buckets are cumulative counts, one more than the
		// bounds (+Inf).
		HistogramBounds []float64 `json:"histogram_bounds_ms"`
	}
	out.HistogramBounds = Bounds
	for _, c := range sn.ctrs {
		if q.keep(c.m.name) && (!q.UsedOnly || c.Value() != 0) {
			out.Stats = append(out.Stats, stat{c.m.name, c.Value()})
		}
	}
	for _, g := range sn.gs {
		if q.keep(g.m.name) && (!q.UsedOnly || g.Value() != 0) {
			out.Stats = append(out.Stats, stat{g.m.name, g.Value()})
		}
	}
	for _, h := range sn.hists {
		if q.keep(h.m.name) && (!q.UsedOnly || h.Count() != 0) {
			out.Stats = append(out.Stats, stat{h.m.name, map[string]any{"count": h.Count(), "sum_ms": h.SumMs(),
				"p50": nanNil(h.Quantile(.5)), "p99": nanNil(h.Quantile(.99)), "buckets": h.Cumulative()}})
		}
	}
	sort.Slice(out.Stats, func(i, j int) bool { return out.Stats[i].Name < out.Stats[j].Name })
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func nanNil(v float64) any {
	if v != v {
		return nil
	}
	return v
}

// WritePrometheus writes the text exposition format 0.0.4.
func (s *Store) WritePrometheus(w io.Writer) error {
	sn := s.snapshot()
	var b strings.Builder
	typed := map[string]bool{}
	header := func(name, kind string) {
		if !typed[name] {
			typed[name] = true
			fmt.Fprintf(&b, "# TYPE %s %s\n", name, kind)
		}
	}
	// Group by Prometheus name so that one TYPE line heads each family.
	sort.SliceStable(sn.ctrs, func(i, j int) bool { return sn.ctrs[i].m.promName < sn.ctrs[j].m.promName })
	sort.SliceStable(sn.gs, func(i, j int) bool { return sn.gs[i].m.promName < sn.gs[j].m.promName })
	sort.SliceStable(sn.hists, func(i, j int) bool { return sn.hists[i].m.promName < sn.hists[j].m.promName })
	for _, c := range sn.ctrs {
		header(c.m.promName, "counter")
		fmt.Fprintf(&b, "%s%s %d\n", c.m.promName, labelText(c.m.labels, nil), c.Value())
	}
	for _, g := range sn.gs {
		header(g.m.promName, "gauge")
		fmt.Fprintf(&b, "%s%s %d\n", g.m.promName, labelText(g.m.labels, nil), g.Value())
	}
	for _, h := range sn.hists {
		header(h.m.promName, "histogram")
		cum := h.Cumulative()
		for i, c := range cum {
			le := "+Inf"
			if i < len(Bounds) {
				le = strconv.FormatFloat(Bounds[i], 'g', -1, 64)
			}
			fmt.Fprintf(&b, "%s_bucket%s %d\n", h.m.promName, labelText(h.m.labels, &Label{"le", le}), c)
		}
		fmt.Fprintf(&b, "%s_sum%s %g\n", h.m.promName, labelText(h.m.labels, nil), h.SumMs())
		fmt.Fprintf(&b, "%s_count%s %d\n", h.m.promName, labelText(h.m.labels, nil), h.Count())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func labelText(ls []Label, extra *Label) string {
	if len(ls) == 0 && extra == nil {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	write := func(i int, l Label) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteString(`="`)
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(l.Value))
		b.WriteByte('"')
	}
	for i, l := range ls {
		write(i, l)
	}
	if extra != nil {
		write(len(ls), *extra)
	}
	b.WriteByte('}')
	return b.String()
}
