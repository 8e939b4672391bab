package grpcstats

import "testing"

// TestFrameCounter: frames are counted however the stream is cut, and a
// message longer than one piece is skipped across pieces.
func TestFrameCounter(t *testing.T) {
	big := make([]byte, 300)
	stream := append([]byte{0, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 0, 1, 0, 0, 1, 44}, big...)
	stream = append(stream, 0, 0, 0, 0, 1, 'z')
	for _, cut := range []int{1, 2, 5, 7, 64, len(stream)} {
		var fc frameCounter
		var total uint64
		for i := 0; i < len(stream); i += cut {
			total += fc.inspect(stream[i:min(i+cut, len(stream))])
		}
		if total != 4 || fc.frames != 4 || fc.hdr != 0 || fc.skip != 0 {
			t.Fatalf("pieces of %d: %d frames (%d kept), state hdr %d skip %d; want 4 and a clean end", cut, total, fc.frames, fc.hdr, fc.skip)
		}
	}
}

func TestServiceMethod(t *testing.T) {
	for path, want := range map[string]string{"/pkg.Svc/Do": "pkg.Svc Do", "/a/b/c": "", "/a": "", "//b": "", "/a/": "", "x/y": "", "/a/b?x": ""} {
		s, m, ok := serviceMethod([]byte(path))
		got := ""
		if ok {
			got = string(s) + " " + string(m)
		}
		if got != want {
			t.Errorf("%q: %q, want %q", path, got, want)
		}
	}
}
