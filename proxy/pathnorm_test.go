package proxy

import (
	"strings"
	"testing"
)

// TestPathNormalization: the RFC 3986 normalization (dot segments,
// escaped unreserved characters, backslashes, escaping), merging slashes
// and unescaping %2F/%5C, on paths (the query is the caller's).
func TestPathNormalization(t *testing.T) {
	for in, want := range map[string]string{
		"/":                     "/",
		"/a/b/c":                "/a/b/c",
		"/a/b/../c":             "/a/c",
		"/a/./b":                "/a/b",
		"/a/.":                  "/a/",
		"/a/..":                 "/",
		"/..":                   "/",
		"/../../a":              "/a",
		"/a/b/..":               "/a/",
		"/a//b":                 "/a//b",
		"/a/%2e%2E/b":           "/b",
		"/a/.%2e/b":             "/b",
		"/%61dmin":              "/admin",
		"/a%2fb":                "/a%2fb",
		"/a\\..\\admin":         "/admin",
		"/a b":                  "/a%20b",
		"/caf\xc3\xa9":          "/caf%C3%A9",
		"/%7euser/%zz":          "/~user/%25zz",
		"/%7%61":                "/%257a",
		"/public/..%2f..%2fadm": "/public/..%2f..%2fadm",
	} {
		got := string(removeDotSegments(canonicalPath([]byte(in))))
		if got != want {
			t.Errorf("normalize %q = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"/a//b///c/": "/a/b/c/", "//": "/", "/a": "/a"} {
		if got := string(mergeSlashes([]byte(in))); got != want {
			t.Errorf("merge %q = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"/a%2Fb%5cc": "/a/b\\c", "/a%2": "/a%2", "/%2f%2F": "///"} {
		if got := string(unescapeSlashes([]byte(in))); got != want {
			t.Errorf("unescape %q = %q, want %q", in, got, want)
		}
		if !hasEscapedSlash([]byte(in)) && in != "/a%2" {
			t.Errorf("hasEscapedSlash(%q) = false", in)
		}
	}
}

// FuzzPathNormalization: any path normalizes to one that starts with
// "/", holds no "." or ".." segment and normalizes to itself.
func FuzzPathNormalization(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/x", "/a\\b/./c/..", "//a//b/", "/caf\xc3\xa9 x", "/%zz%4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) == 0 || in[0] != '/' || strings.IndexByte(in, '?') >= 0 {
			return
		}
		once := string(removeDotSegments(canonicalPath([]byte(in))))
		twice := string(removeDotSegments(canonicalPath([]byte(once))))
		if once == "" || once[0] != '/' || once != twice {
			t.Fatalf("%q -> %q -> %q", in, once, twice)
		}
		for _, seg := range strings.Split(once, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q -> %q keeps a dot segment", in, once)
			}
		}
	})
}
