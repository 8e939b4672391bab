package router

import (
	"testing"
	"time"
)

func TestMaxStreamDurationFor(t *testing.T) {
	ms := time.Millisecond
	plain := &MaxStreamDuration{Max: 300 * ms, HasMax: true}
	istio := &MaxStreamDuration{UseHeader: true, HasMax: true} // max 0s, header max 0s
	capped := &MaxStreamDuration{Max: 300 * ms, HasMax: true, UseHeader: true, HeaderMax: 500 * ms, HeaderOffset: 100 * ms}
	headerOnly := &MaxStreamDuration{UseHeader: true} // no max_stream_duration: the connection manager's
	for _, tc := range []struct {
		m      *MaxStreamDuration
		header time.Duration
		ok     bool
		want   time.Duration
	}{
		{plain, 900 * ms, true, 300 * ms}, // the header is not read
		{plain, 0, false, 300 * ms},
		{istio, 900 * ms, true, 900 * ms}, // uncapped
		{istio, 0, false, 0},              // no bound
		{capped, 400 * ms, true, 300 * ms},
		{capped, 900 * ms, true, 400 * ms}, // capped at 500, less 100
		{capped, 50 * ms, true, 50 * ms},   // shorter than the offset: as it is
		{capped, 0, false, 300 * ms},
		{capped, 0, true, 300 * ms}, // grpc-timeout 0: none
		{headerOnly, 900 * ms, true, 900 * ms},
	} {
		if got, set := tc.m.For(tc.header, tc.ok); got != tc.want || !set {
			t.Errorf("%+v For(%v, %v) = %v %v, want %v", *tc.m, tc.header, tc.ok, got, set, tc.want)
		}
	}
	if _, set := headerOnly.For(0, false); set {
		t.Error("a route without max_stream_duration's field set its bound without the header")
	}
}
