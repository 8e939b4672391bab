package strait_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/straitproxy/strait/"

// layer places a package in docs/architecture.md's import order; a package
// may import only packages of a lower layer. -1: not checked (tests).
func layer(pkg string) int {
	p := strings.TrimPrefix(pkg, module)
	switch {
	case p == "test" || strings.HasPrefix(p, "test/") || strings.HasPrefix(p, "bench") || strings.HasPrefix(p, "examples/"):
		return -1
	case p == "config" || strings.HasPrefix(p, "internal/"):
		return 0
	case p == "protocol" || p == "network" || p == "tlsconfig" || p == "stats" || p == "accesslog":
		return 10
	case p == "protocol/rpc":
		// The framed-RPC seam: codecs (protocol/dubbo) build on it.
		return 15
	case strings.HasPrefix(p, "protocol/") || strings.HasPrefix(p, "network/") || p == "transport":
		return 20
	case p == "filter" || p == "router" || p == "upstream":
		return 30
	case p == "proxy" || p == "rbac":
		return 40
	case strings.HasPrefix(p, "filter/") || strings.HasPrefix(p, "upstream/lb/") || strings.HasPrefix(p, "transport/") ||
		strings.HasPrefix(p, "tracing/"):
		return 50
	case p == "xds" || p == "admin" || p == "listener":
		return 60
	case p == "server" || p == "extensions":
		return 70
	case strings.HasPrefix(p, "cmd/"):
		return 80
	}
	return -2
}

func isExtension(pkg string) bool {
	p := strings.TrimPrefix(pkg, module)
	return strings.HasPrefix(p, "protocol/") && p != "protocol/rpc" || strings.HasPrefix(p, "filter/") || strings.HasPrefix(p, "upstream/lb/") ||
		strings.HasPrefix(p, "network/") || strings.HasPrefix(p, "transport/") || strings.HasPrefix(p, "tracing/")
}

// TestImportsPointDown fails on an import that points up the layer order
// of docs/architecture.md, on an extension importing another extension,
// and on a package that has no place in the order.
func TestImportsPointDown(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range violations(strings.Split(strings.TrimSpace(string(out)), "\n")) {
		t.Error(e)
	}
}

// TestViolationsAreFound keeps the check honest: made-up upward and
// sideways imports must be reported.
func TestViolationsAreFound(t *testing.T) {
	bad := []string{
		module + "router " + module + "proxy",
		module + "filter/http/router " + module + "filter/network/tcpproxy",
		module + "network " + module + "server",
		module + "newthing",
	}
	if got := violations(bad); len(got) != len(bad) {
		t.Fatalf("found %d of %d violations: %v", len(got), len(bad), got)
	}
	// Within one extension's tree, imports are its own business; a
	// sibling's tree is another extension.
	if got := violations([]string{module + "transport/tlcp/tlcptest " + module + "transport/tlcp"}); len(got) != 0 {
		t.Fatalf("an extension's sub-package importing it: %v", got)
	}
	if got := violations([]string{module + "transport/tlcp/tlcptest " + module + "transport/tls"}); len(got) != 1 {
		t.Fatalf("a sub-package importing another extension: %v", got)
	}
}

func violations(lines []string) []string {
	var out []string
	for _, line := range lines {
		f := strings.Fields(line)
		pkg, imports := f[0], f[1:]
		if pkg == strings.TrimSuffix(module, "/") {
			continue
		}
		from := layer(pkg)
		if from == -2 {
			out = append(out, pkg+" has no place in docs/architecture.md's import order")
			continue
		}
		if from == -1 {
			continue
		}
		for _, imp := range imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := layer(imp)
			switch {
			case isExtension(pkg) && isExtension(imp) && (strings.HasPrefix(pkg, imp+"/") || strings.HasPrefix(imp, pkg+"/")):
				// An extension's own sub-package (transport/tlcp/tlcptest,
				// its test certificates) is part of the same extension.
			case isExtension(pkg) && isExtension(imp):
				out = append(out, "extension "+pkg+" imports extension "+imp)
			case to >= from && !(pkg == module+"filter" && imp == module+"upstream"):
				out = append(out, pkg+" imports "+imp+": imports must point down")
			}
		}
	}
	return out
}
