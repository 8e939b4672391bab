package test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGoControlPlaneSamples runs every sample bootstrap of
// go-control-plane's sample/ folder (the module version go.mod pins)
// through `strait --mode validate`, unmodified. Those that use only what
// Strait implements must pass; each of the others must be refused for the
// reason listed, which names what is still missing (and this test fails
// when that changes, so the list stays true).
func TestGoControlPlaneSamples(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/envoyproxy/go-control-plane").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "sample")
	want := map[string]string{
		"bootstrap-ads.yaml":       "",
		"bootstrap-delta-ads.yaml": "",
		"bootstrap-xds.yaml":       "", // per-type gRPC streams, RTDS
		"bootstrap-delta.yaml":     "", // per-type delta streams, RTDS
		"bootstrap-rest.yaml":      "", // REST polling, RTDS over REST
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) != len(want) {
		t.Fatalf("%d samples in %s, the test lists %d", len(files), dir, len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			reason, listed := want[name]
			if !listed {
				t.Fatalf("sample %s is not listed", name)
			}
			out, err := exec.Command(straitBin, "--mode", "validate", "-c", f).CombinedOutput()
			switch {
			case reason == "" && err != nil:
				t.Fatalf("refused:\n%s", out)
			case reason == "" && !strings.Contains(string(out), "OK"):
				t.Fatalf("no OK:\n%s", out)
			case reason != "" && err == nil:
				t.Fatalf("now validates: list it as passing\n%s", out)
			case reason != "" && !strings.Contains(string(out), reason):
				t.Fatalf("refused for another reason than %q:\n%s", reason, out)
			}
		})
	}
}
