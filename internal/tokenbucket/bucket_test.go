package tokenbucket

import (
	"strings"
	"testing"
	"time"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestFromProto(t *testing.T) {
	for _, c := range []struct {
		tb  *typev3.TokenBucket
		err string
	}{
		{&typev3.TokenBucket{MaxTokens: 5, FillInterval: durationpb.New(time.Second)}, ""},
		{&typev3.TokenBucket{MaxTokens: 5, TokensPerFill: wrapperspb.UInt32(2), FillInterval: durationpb.New(50 * time.Millisecond)}, ""},
		{nil, "token_bucket: required"},
		{&typev3.TokenBucket{MaxTokens: 5, FillInterval: durationpb.New(49 * time.Millisecond)}, "token_bucket.fill_interval: at least 50ms"},
		{&typev3.TokenBucket{FillInterval: durationpb.New(time.Second)}, "token_bucket.max_tokens: must be above 0"},
	} {
		_, err := FromProto(c.tb)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%v: error %v, want %q", c.tb, err, c.err)
		}
	}
}

func TestTakeAndFill(t *testing.T) {
	b := New(Spec{Max: 2, PerFill: 1, Interval: 200 * time.Millisecond})
	for i, want := range []bool{true, true, false} {
		if ok, _, _ := b.Take(); ok != want {
			t.Fatalf("take %d: %v", i, ok)
		}
	}
	time.Sleep(250 * time.Millisecond) // one fill (two would take 400 ms)
	if ok, left, _ := b.Take(); !ok || left != 0 {
		t.Fatalf("after a fill: %v, %d left", ok, left)
	}
}

func TestShared(t *testing.T) {
	s := Spec{Max: 1, PerFill: 1, Interval: time.Hour}
	a, b := Shared("k", s), Shared("k", s)
	if a != b {
		t.Fatal("same key and shape: two buckets")
	}
	if Shared("other", s) == a || Shared("k", Spec{Max: 2, PerFill: 1, Interval: time.Hour}) == a {
		t.Fatal("a different key or shape shares the bucket")
	}
	a.Take()
	if ok, _, _ := b.Take(); ok {
		t.Fatal("the shared bucket's token was taken twice")
	}
}
