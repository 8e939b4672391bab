package config

import (
	"encoding/json"
	"strings"
	"testing"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestTypedStruct: a TypedStruct names its extension by type_url; a proto
// config is decoded into its message strictly, a config without proto
// comes as the Struct; DecodeStruct refuses unknown fields and wrong
// types by name.
func TestTypedStruct(t *testing.T) {
	const kind Kind = "typed struct test"
	// A proto config type (any registered message whose JSON is an
	// object serves: udpa's TypedStruct itself).
	protoURL := "type.googleapis.com/udpa.type.v1.TypedStruct"
	Register(Extension{Kind: kind, Name: "proto", TypeURL: protoURL})
	Register(Extension{Kind: kind, Name: "plain", TypeURL: "type.googleapis.com/strait.test.Plain"})
	wrap := func(v3 bool, url string, fields map[string]any) *anypb.Any {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		var m proto.Message = &xdstypev3.TypedStruct{TypeUrl: url, Value: s}
		if !v3 {
			m = &udpatypev1.TypedStruct{TypeUrl: url, Value: s}
		}
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	ext, msg, err := Decode(kind, wrap(true, "type.googleapis.com/strait.test.Plain", map[string]any{"name": "a", "n": 2}))
	if err != nil || ext.Name != "plain" {
		t.Fatalf("plain: %v %v", ext, err)
	}
	var v struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	if err := DecodeStruct(msg.(*structpb.Struct), &v); err != nil || v.Name != "a" || v.N != 2 {
		t.Fatalf("DecodeStruct: %+v %v", v, err)
	}
	if err := DecodeStruct(mustStruct(t, map[string]any{"nme": "a"}), &v); err == nil || err.Error() != "nme: unknown field" {
		t.Fatalf("unknown field: %v", err)
	}
	if err := DecodeStruct(mustStruct(t, map[string]any{"n": "x"}), &v); err == nil || !strings.HasPrefix(err.Error(), "n: wrong type") {
		t.Fatalf("wrong type: %v", err)
	}
	// Names match exactly; nested unknown fields name their path; null
	// is absent.
	if err := DecodeStruct(mustStruct(t, map[string]any{"Name": "a"}), &v); err == nil || err.Error() != "Name: unknown field" {
		t.Fatalf("a name in another case: %v", err)
	}
	var nested struct {
		Inner *struct {
			A int `json:"a"`
		} `json:"inner"`
		List []struct {
			B string `json:"b"`
		} `json:"list"`
		Raw json.RawMessage `json:"raw"`
	}
	if err := DecodeStruct(mustStruct(t, map[string]any{"inner": map[string]any{"a": 1, "z": 2}}), &nested); err == nil || err.Error() != "inner.z: unknown field" {
		t.Fatalf("nested unknown field: %v", err)
	}
	if err := DecodeStruct(mustStruct(t, map[string]any{"list": []any{map[string]any{"b": "x"}, map[string]any{"c": "y"}}}), &nested); err == nil || err.Error() != "list[1].c: unknown field" {
		t.Fatalf("unknown field in a list: %v", err)
	}
	if err := DecodeStruct(mustStruct(t, map[string]any{"raw": map[string]any{"anything": 1}, "inner": nil}), &nested); err != nil || nested.Inner != nil || string(nested.Raw) != `{"anything":1}` {
		t.Fatalf("raw and null: %v %s", err, nested.Raw)
	}
	// udpa.type.v1, and an unknown type URL.
	if _, _, err := Decode(kind, wrap(false, "strait.test.Plain", nil)); err != nil {
		t.Fatalf("udpa TypedStruct: %v", err)
	}
	if _, _, err := Decode(kind, wrap(true, "type.googleapis.com/strait.test.Nope", nil)); err == nil || !strings.Contains(err.Error(), "typed_config.type_url") {
		t.Fatalf("unknown type: %v", err)
	}
	// A proto type: decoded strictly into the message.
	ext, msg, err = Decode(kind, wrap(true, protoURL, map[string]any{"type_url": "inner"}))
	if err != nil || ext.Name != "proto" || msg.(*udpatypev1.TypedStruct).GetTypeUrl() != "inner" {
		t.Fatalf("proto config: %v %v", msg, err)
	}
	if _, _, err := Decode(kind, wrap(true, protoURL, map[string]any{"bogus": 1})); err == nil || !strings.Contains(err.Error(), "typed_config.value") {
		t.Fatalf("an unknown field of a proto config: %v", err)
	}
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
