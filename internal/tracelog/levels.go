package tracelog

// Levels make the process's log levels changeable while it runs (the
// admin's /logging): a slog.Handler that filters by a level per logger,
// the logger being named by the attributes a component adds to its
// slog.Logger ("component", "listener", "cluster", "filter").

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
)

// Names are the loggers, as /logging lists them: "main" is everything
// that names no component.
var Names = []string{"admin", "filter", "listener", "main", "upstream", "xds"}

// Levels holds a level per logger; each is read with one atomic load.
type Levels struct {
	levels map[string]*slog.LevelVar
}

// NewLevels starts every logger at level.
func NewLevels(level slog.Level) *Levels {
	l := &Levels{levels: map[string]*slog.LevelVar{}}
	for _, n := range Names {
		v := new(slog.LevelVar)
		v.Set(level)
		l.levels[n] = v
	}
	return l
}

// Handler wraps inner (which must let every level through) with the
// per-logger levels.
func (l *Levels) Handler(inner slog.Handler) slog.Handler {
	return &handler{inner: inner, lv: l, level: l.levels["main"]}
}

// Set sets one logger's level ("debug"); name "" sets them all.
func (l *Levels) Set(name, level string) error {
	lvl, err := ParseLevel(level)
	if err != nil {
		return err
	}
	if name == "" {
		for _, v := range l.levels {
			v.Set(lvl)
		}
		return nil
	}
	if err := l.Check(name); err != nil {
		return err
	}
	l.levels[name].Set(lvl)
	return nil
}

// Check reports an error unless name is one of the loggers.
func (l *Levels) Check(name string) error {
	if _, ok := l.levels[name]; !ok {
		return fmt.Errorf("unknown logger %q (loggers: %s)", name, strings.Join(Names, ", "))
	}
	return nil
}

// List returns "name: level" for every logger, sorted.
func (l *Levels) List() []string {
	out := make([]string, 0, len(l.levels))
	for n, v := range l.levels {
		out = append(out, n+": "+LevelName(v.Level()))
	}
	sort.Strings(out)
	return out
}

// ParseLevel reads Envoy's level names (trace, debug, info, warning,
// error, critical, off).
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace":
		return Level, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	case "critical":
		return slog.LevelError + 1, nil
	case "off":
		return slog.LevelError + 100, nil
	}
	return 0, fmt.Errorf("unknown log level %q (trace, debug, info, warning, error, critical, off)", s)
}

// LevelName is ParseLevel's inverse.
func LevelName(l slog.Level) string {
	switch {
	case l <= Level:
		return "trace"
	case l <= slog.LevelDebug:
		return "debug"
	case l <= slog.LevelInfo:
		return "info"
	case l <= slog.LevelWarn:
		return "warning"
	case l <= slog.LevelError:
		return "error"
	case l <= slog.LevelError+1:
		return "critical"
	}
	return "off"
}

type handler struct {
	inner slog.Handler
	lv    *Levels
	level *slog.LevelVar
	named bool // a component attribute chose the logger
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *handler) Handle(ctx context.Context, r slog.Record) error { return h.inner.Handle(ctx, r) }

// component maps an attribute a logger carries to the logger it names.
func component(a slog.Attr) string {
	switch a.Key {
	case "component":
		return a.Value.String()
	case "listener":
		return "listener"
	case "cluster":
		return "upstream"
	case "filter":
		return "filter"
	}
	return ""
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &handler{inner: h.inner.WithAttrs(attrs), lv: h.lv, level: h.level, named: h.named}
	for _, a := range attrs {
		// The first component named decides (a filter's logger is made
		// from its listener's: it is the filter's).
		if c := component(a); c != "" {
			if v, ok := h.lv.levels[c]; ok && (!n.named || c == "filter") {
				n.level, n.named = v, true
			}
		}
	}
	return n
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{inner: h.inner.WithGroup(name), lv: h.lv, level: h.level, named: h.named}
}
