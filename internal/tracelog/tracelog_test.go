package tracelog

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// TestOffCostsNothing: the check the data path makes allocates nothing
// when trace is off.
func TestOffCostsNothing(t *testing.T) {
	l := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if On(l) {
		t.Fatal("trace is on at debug")
	}
	if n := testing.AllocsPerRun(1000, func() { On(l) }); n != 0 {
		t.Fatalf("%v allocations per check", n)
	}
}

func TestTraceLevelName(t *testing.T) {
	var b bytes.Buffer
	l := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: Level, ReplaceAttr: ReplaceAttr}))
	if !On(l) {
		t.Fatal("trace is off at trace")
	}
	Log(l, "request", "status", 200)
	if !strings.Contains(b.String(), "level=TRACE msg=request status=200") {
		t.Fatalf("got %q", b.String())
	}
}
