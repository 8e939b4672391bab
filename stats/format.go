package stats

import (
	"encoding/json"
	"fmt"
	"io"
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

// WriteText writes "name: value" lines, sorted, as Envoy's /stats does.
// filter, when not empty, keeps the names that contain it.
func (s *Store) WriteText(w io.Writer, filter string) error {
	sn := s.snapshot()
	var b strings.Builder
	type line struct{ name, val string }
	var lines []line
	for _, c := range sn.ctrs {
		lines = append(lines, line{c.m.name, strconv.FormatUint(c.Value(), 10)})
	}
	for _, g := range sn.gs {
		lines = append(lines, line{g.m.name, strconv.FormatInt(g.Value(), 10)})
	}
	for _, h := range sn.hists {
		lines = append(lines, line{h.m.name, fmt.Sprintf("P50(%s) P90(%s) P99(%s) count(%d) sum(%g)",
			fmtQ(h.Quantile(.5)), fmtQ(h.Quantile(.9)), fmtQ(h.Quantile(.99)), h.Count(), h.SumMs())})
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].name < lines[j].name })
	for _, l := range lines {
		if filter != "" && !strings.Contains(l.name, filter) {
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

func fmtQ(v float64) string {
	if v != v {
		return "nan"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// WriteJSON writes {"stats":[{"name":..,"value":..},...]} as Envoy's
// /stats?format=json does (histograms as count and sum).
func (s *Store) WriteJSON(w io.Writer, filter string) error {
	sn := s.snapshot()
	type stat struct {
		Name  string `json:"name"`
		Value any    `json:"value"`
	}
	var out struct {
		Stats []stat `json:"stats"`
	}
	keep := func(n string) bool { return filter == "" || strings.Contains(n, filter) }
	for _, c := range sn.ctrs {
		if keep(c.m.name) {
			out.Stats = append(out.Stats, stat{c.m.name, c.Value()})
		}
	}
	for _, g := range sn.gs {
		if keep(g.m.name) {
			out.Stats = append(out.Stats, stat{g.m.name, g.Value()})
		}
	}
	for _, h := range sn.hists {
		if keep(h.m.name) {
			out.Stats = append(out.Stats, stat{h.m.name, map[string]any{"count": h.Count(), "sum_ms": h.SumMs(),
				"p50": nanNil(h.Quantile(.5)), "p99": nanNil(h.Quantile(.99))}})
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
