package router

import "testing"

// TestSupportedTableNamesExist guards the allow-list against typos and
// renames in the API.
func TestSupportedTableNamesExist(t *testing.T) {
	if missing := supported.Missing(); len(missing) > 0 {
		t.Fatalf("not in the API: %v", missing)
	}
}
