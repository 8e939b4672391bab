package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// The two TypedStruct types: a config given as a JSON-like Struct and the
// type URL it stands for (xds.type.v3 and its older udpa.type.v1 name).
var (
	typedStructV3 = "type.googleapis.com/" + string((&xdstypev3.TypedStruct{}).ProtoReflect().Descriptor().FullName())
	typedStructV1 = "type.googleapis.com/" + string((&udpatypev1.TypedStruct{}).ProtoReflect().Descriptor().FullName())
)

// decodeTypedStruct decodes a TypedStruct: its type_url names the
// extension. When that type is a known proto message, the value is
// decoded into it strictly (unknown fields refused), as Envoy does;
// otherwise (an extension whose config has no proto, documented in its
// README) the extension gets the *structpb.Struct and decodes it with
// DecodeStruct.
func decodeTypedStruct(k Kind, typed *anypb.Any) (*Extension, proto.Message, error) {
	var url string
	var value *structpb.Struct
	switch typed.GetTypeUrl() {
	case typedStructV3:
		var ts xdstypev3.TypedStruct
		if err := typed.UnmarshalTo(&ts); err != nil {
			return nil, nil, err
		}
		url, value = ts.GetTypeUrl(), ts.GetValue()
	default:
		var ts udpatypev1.TypedStruct
		if err := typed.UnmarshalTo(&ts); err != nil {
			return nil, nil, err
		}
		url, value = ts.GetTypeUrl(), ts.GetValue()
	}
	if url == "" {
		return nil, nil, At("type_url", errors.New("required"))
	}
	if !strings.Contains(url, "/") {
		url = "type.googleapis.com/" + url
	}
	ext, err := Lookup(k, url)
	if err != nil {
		return nil, nil, At("type_url", err)
	}
	if value == nil {
		value = &structpb.Struct{}
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return ext, value, nil
	}
	js, err := protojson.Marshal(value)
	if err != nil {
		return nil, nil, At("value", err)
	}
	msg := mt.New().Interface()
	if err := protojson.Unmarshal(js, msg); err != nil {
		return nil, nil, At("value", err)
	}
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		if errs := ValidationErrors(v.ValidateAll()); len(errs) > 0 {
			return nil, nil, At("value", Join(errs))
		}
	}
	return ext, msg, nil
}

// DecodeStruct decodes a TypedStruct's value into v (a Go struct with
// json tags) strictly: an unknown field, or a value of the wrong type,
// is an error naming the field.
func DecodeStruct(s *structpb.Struct, v any) error {
	js, err := protojson.Marshal(s)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return At(te.Field, fmt.Errorf("wrong type: %s, want %s", te.Value, te.Type))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return At(name, errors.New("unknown field"))
		}
		return err
	}
	return nil
}
