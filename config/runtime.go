package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Runtime is Envoy's layered runtime: named layers of key/value entries,
// each overriding the ones before it (layered_runtime.layers in order).
// Readers take the merged Snapshot without a lock; a layer change builds a
// new one. Layers are static (from the bootstrap), disk (files under a
// directory), admin (set through the admin API) or RTDS (pushed by xDS).
type Runtime struct {
	snap atomic.Pointer[RuntimeSnapshot]

	mu     sync.Mutex
	layers []*runtimeLayer
}

type runtimeLayer struct {
	name    string
	kind    string // static, disk, admin, rtds
	entries map[string]RuntimeEntry
}

// RuntimeEntry is one runtime value, kept as given and as what it parses
// to.
type RuntimeEntry struct {
	Raw string
	// Num is set when Raw is a number (IsNum), Bool when it is true or
	// false (IsBool).
	Num    float64
	IsNum  bool
	Bool   bool
	IsBool bool
	// Fraction is set for a fractional percent (numerator, denominator).
	Fraction *typev3.FractionalPercent
}

// RuntimeSnapshot is the merged view of every layer at one moment.
type RuntimeSnapshot struct {
	entries map[string]RuntimeEntry
	layers  []LayerView
}

// LayerView is one layer as the admin page shows it.
type LayerView struct {
	Name, Kind string
	Entries    map[string]RuntimeEntry
}

// NewRuntime makes an empty runtime (no layer: every key takes its
// default).
func NewRuntime() *Runtime {
	r := &Runtime{}
	r.snap.Store(&RuntimeSnapshot{entries: map[string]RuntimeEntry{}})
	return r
}

// AddLayer appends a layer (at start-up, in layered_runtime order).
func (r *Runtime) AddLayer(name, kind string, entries map[string]RuntimeEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.layers = append(r.layers, &runtimeLayer{name: name, kind: kind, entries: entries})
	r.rebuild()
}

// SetLayer replaces the entries of the named layer; false when no layer
// has that name.
func (r *Runtime) SetLayer(name string, entries map[string]RuntimeEntry) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.layers {
		if l.name == name {
			l.entries = entries
			r.rebuild()
			return true
		}
	}
	return false
}

// Modify sets (or, with an empty value, removes) keys of the admin layer;
// false when there is none.
func (r *Runtime) Modify(values map[string]string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.layers {
		if l.kind != "admin" {
			continue
		}
		next := make(map[string]RuntimeEntry, len(l.entries)+len(values))
		for k, v := range l.entries {
			next[k] = v
		}
		for k, v := range values {
			if v == "" {
				delete(next, k)
			} else {
				next[k] = ParseRuntimeEntry(v)
			}
		}
		l.entries = next
		r.rebuild()
		return true
	}
	return false
}

// rebuild merges the layers into a new snapshot (mu held).
func (r *Runtime) rebuild() {
	s := &RuntimeSnapshot{entries: map[string]RuntimeEntry{}}
	for _, l := range r.layers {
		for k, v := range l.entries {
			s.entries[k] = v
		}
		s.layers = append(s.layers, LayerView{Name: l.name, Kind: l.kind, Entries: l.entries})
	}
	r.snap.Store(s)
}

// Snapshot is the merged runtime now.
func (r *Runtime) Snapshot() *RuntimeSnapshot {
	if r == nil {
		return nil
	}
	return r.snap.Load()
}

// Get returns the final value of key.
func (s *RuntimeSnapshot) Get(key string) (RuntimeEntry, bool) {
	if s == nil {
		return RuntimeEntry{}, false
	}
	e, ok := s.entries[key]
	return e, ok
}

// Layers lists the layers in order.
func (s *RuntimeSnapshot) Layers() []LayerView { return s.layers }

// Keys lists every key with a value, sorted.
func (s *RuntimeSnapshot) Keys() []string {
	out := make([]string, 0, len(s.entries))
	for k := range s.entries {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// FeatureEnabled is Envoy's featureEnabled for a fractional percent: the
// runtime value of key (a fractional percent, or a number taken as the
// numerator over def's denominator) or else def, against random.
func (s *RuntimeSnapshot) FeatureEnabled(key string, def *typev3.FractionalPercent, random uint64) bool {
	num, den := uint64(def.GetNumerator()), denominator(def.GetDenominator())
	if e, ok := s.Get(key); ok && key != "" {
		switch {
		case e.Fraction != nil:
			num, den = uint64(e.Fraction.GetNumerator()), denominator(e.Fraction.GetDenominator())
		case e.IsNum && e.Num >= 0:
			num = uint64(e.Num)
		}
	}
	if num >= den {
		return true
	}
	return random%den < num
}

func denominator(d typev3.FractionalPercent_DenominatorType) uint64 {
	switch d {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return 10000
	case typev3.FractionalPercent_MILLION:
		return 1000000
	}
	return 100
}

// ParseRuntimeEntry reads a value given as text (a disk layer's file, the
// admin API).
func ParseRuntimeEntry(raw string) RuntimeEntry {
	raw = strings.TrimSpace(raw)
	e := RuntimeEntry{Raw: raw}
	if f, err := strconv.ParseFloat(raw, 64); err == nil {
		e.Num, e.IsNum = f, true
	}
	switch strings.ToLower(raw) {
	case "true":
		e.Bool, e.IsBool = true, true
	case "false":
		e.IsBool = true
	}
	return e
}

// RuntimeEntries flattens a static or RTDS layer's Struct: nested keys
// join with dots; a struct with numerator or denominator (or an empty
// one) is a fractional percent, as Envoy reads it.
func RuntimeEntries(s *structpb.Struct) (map[string]RuntimeEntry, error) {
	out := map[string]RuntimeEntry{}
	var walk func(prefix string, v *structpb.Value) error
	walk = func(prefix string, v *structpb.Value) error {
		switch k := v.GetKind().(type) {
		case *structpb.Value_StructValue:
			f := k.StructValue.GetFields()
			_, hasNum := f["numerator"]
			_, hasDen := f["denominator"]
			if len(f) == 0 || hasNum || hasDen {
				fp, err := fractionFromStruct(k.StructValue)
				if err != nil {
					return At(prefix, err)
				}
				out[prefix] = RuntimeEntry{Raw: fmt.Sprintf("%d/%s", fp.GetNumerator(), fp.GetDenominator()), Fraction: fp}
				return nil
			}
			for name, sub := range f {
				if err := walk(prefix+"."+name, sub); err != nil {
					return err
				}
			}
		case *structpb.Value_StringValue:
			out[prefix] = ParseRuntimeEntry(k.StringValue)
		case *structpb.Value_NumberValue:
			out[prefix] = RuntimeEntry{Raw: strconv.FormatFloat(k.NumberValue, 'f', -1, 64), Num: k.NumberValue, IsNum: true}
		case *structpb.Value_BoolValue:
			out[prefix] = RuntimeEntry{Raw: strconv.FormatBool(k.BoolValue), Bool: k.BoolValue, IsBool: true}
		case *structpb.Value_NullValue:
		default:
			return At(prefix, fmt.Errorf("a list is not a runtime value"))
		}
		return nil
	}
	for name, v := range s.GetFields() {
		if err := walk(name, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func fractionFromStruct(s *structpb.Struct) (*typev3.FractionalPercent, error) {
	fp := &typev3.FractionalPercent{}
	for k, v := range s.GetFields() {
		switch k {
		case "numerator":
			n := v.GetNumberValue()
			if n < 0 || n != float64(uint32(n)) {
				return nil, fmt.Errorf("numerator: a whole number is required, got %v", n)
			}
			fp.Numerator = uint32(n)
		case "denominator":
			d, ok := typev3.FractionalPercent_DenominatorType_value[v.GetStringValue()]
			if !ok {
				return nil, fmt.Errorf("denominator: HUNDRED, TEN_THOUSAND or MILLION, got %q", v.GetStringValue())
			}
			fp.Denominator = typev3.FractionalPercent_DenominatorType(d)
		default:
			return nil, fmt.Errorf("a fractional percent has numerator and denominator, not %q", k)
		}
	}
	return fp, nil
}

// DiskEntries reads a disk layer: every regular file under dir (not
// following links below it) is a key, its path relative to dir with '/'
// turned into '.', its trimmed contents the value; names starting with a
// dot are skipped, as Envoy skips them.
func DiskEntries(dir string) (map[string]RuntimeEntry, error) {
	out := map[string]RuntimeEntry{}
	real, err := filepath.EvalSymlinks(dir) // symlink_root is a link, swapped atomically
	if os.IsNotExist(err) {
		return out, nil // an absent directory is an empty layer, as in Envoy
	}
	if err != nil {
		return nil, err
	}
	dir = real
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && path != dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out[strings.ReplaceAll(rel, string(filepath.Separator), ".")] = ParseRuntimeEntry(string(b))
		return nil
	})
	if os.IsNotExist(err) {
		return out, nil // an absent directory is an empty layer, as in Envoy
	}
	return out, err
}

// Uint reads a whole number of the runtime's snapshot (false: not set, not
// a number, or negative); a nil runtime has none.
func (r *Runtime) Uint(key string) (uint64, bool) {
	if r == nil {
		return 0, false
	}
	e, ok := r.Snapshot().Get(key)
	if !ok || !e.IsNum || e.Num < 0 {
		return 0, false
	}
	return uint64(e.Num), true
}
