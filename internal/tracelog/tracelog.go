// Package tracelog names the trace log level (--log-level trace): per
// connection and per request events, below slog's Debug. Code on the data
// path asks On before building a record, so that a disabled level costs a
// comparison and no allocation.
package tracelog

import (
	"context"
	"log/slog"
)

// Level is trace: slog's Debug minus 4.
const Level = slog.LevelDebug - 4

// On reports whether l logs at trace level.
func On(l *slog.Logger) bool { return l != nil && l.Enabled(context.Background(), Level) }

// Log writes a trace record (the caller checked On).
func Log(l *slog.Logger, msg string, args ...any) { l.Log(context.Background(), Level, msg, args...) }

// ReplaceAttr names the trace level "TRACE" in a handler's output.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.LevelKey {
		if lv, ok := a.Value.Any().(slog.Level); ok && lv == Level {
			a.Value = slog.StringValue("TRACE")
		}
	}
	return a
}
