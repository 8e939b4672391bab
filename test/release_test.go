package test

import (
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseIsReproducible runs make release twice: the binaries must
// be byte-identical, carry no path of the machine that built them (so a
// checkout elsewhere builds the same bytes), be static, and be stamped
// with the version (strait --version).
func TestReleaseIsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries twice")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	sums := make([]map[string][32]byte, 2)
	for i := range sums {
		dist := filepath.Join(t.TempDir(), "dist")
		out, err := exec.Command("make", "-s", "-C", "..", "release", "VERSION=9.9.9-test", "DIST="+dist).CombinedOutput()
		if err != nil {
			t.Fatalf("make release: %v\n%s", err, out)
		}
		sums[i] = map[string][32]byte{}
		for _, arch := range []string{"amd64", "arm64"} {
			b, err := os.ReadFile(filepath.Join(dist, "strait-9.9.9-test-linux-"+arch))
			if err != nil {
				t.Fatal(err)
			}
			sums[i][arch] = sha256.Sum256(b)
			root, _ := filepath.Abs("..")
			modcache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
			for _, p := range []string{root, strings.TrimSpace(string(modcache))} {
				if p != "" && p != "/" && strings.Contains(string(b), p) {
					t.Errorf("linux/%s: the binary holds the path %s", arch, p)
				}
			}
		}
		if i == 0 {
			bin := filepath.Join(dist, "strait-9.9.9-test-linux-amd64")
			v, err := exec.Command(bin, "--version").Output()
			if err != nil || strings.TrimSpace(string(v)) != "strait version 9.9.9-test" {
				t.Errorf("--version: %q %v", v, err)
			}
			if f, err := exec.Command("file", bin).Output(); err == nil && !strings.Contains(string(f), "statically linked") {
				t.Errorf("not static: %s", f)
			}
		}
	}
	for _, arch := range []string{"amd64", "arm64"} {
		if sums[0][arch] != sums[1][arch] {
			t.Errorf("linux/%s: two builds differ", arch)
		}
	}
}
