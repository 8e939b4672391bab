package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
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

// IsTypedStruct reports whether a holds a TypedStruct (either name).
func IsTypedStruct(a *anypb.Any) bool {
	u := a.GetTypeUrl()
	return u == typedStructV3 || u == typedStructV1
}

// UnwrapTypedStruct returns a TypedStruct's type URL (with its
// type.googleapis.com/ prefix) and value (never nil).
func UnwrapTypedStruct(typed *anypb.Any) (string, *structpb.Struct, error) {
	var url string
	var value *structpb.Struct
	switch typed.GetTypeUrl() {
	case typedStructV3:
		var ts xdstypev3.TypedStruct
		if err := typed.UnmarshalTo(&ts); err != nil {
			return "", nil, err
		}
		url, value = ts.GetTypeUrl(), ts.GetValue()
	case typedStructV1:
		var ts udpatypev1.TypedStruct
		if err := typed.UnmarshalTo(&ts); err != nil {
			return "", nil, err
		}
		url, value = ts.GetTypeUrl(), ts.GetValue()
	default:
		return "", nil, fmt.Errorf("want a TypedStruct, got %s", typed.GetTypeUrl())
	}
	if url == "" {
		return "", nil, At("type_url", errors.New("required"))
	}
	if !strings.Contains(url, "/") {
		url = "type.googleapis.com/" + url
	}
	if value == nil {
		value = &structpb.Struct{}
	}
	return url, value, nil
}

// decodeTypedStruct decodes a TypedStruct: its type_url names the
// extension. When that type is a known proto message, the value is
// decoded into it strictly (unknown fields refused), as Envoy does;
// otherwise (an extension whose config has no proto, documented in its
// README) the extension gets the *structpb.Struct and decodes it with
// DecodeStruct.
func decodeTypedStruct(k Kind, typed *anypb.Any) (*Extension, proto.Message, error) {
	url, value, err := UnwrapTypedStruct(typed)
	if err != nil {
		return nil, nil, err
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

// DecodeStruct decodes a TypedStruct's value into v (a pointer to a Go
// struct with json tags) strictly: field names must match a tag exactly
// (encoding/json alone would take any case), an unknown field at any
// depth is an error naming its path, and so is a value of the wrong
// type. A null value counts as absent.
func DecodeStruct(s *structpb.Struct, v any) error {
	return decodeStruct(s, v)
}

// DecodeTyped is DecodeStruct for a TypedStruct extension's decoded
// config (a *structpb.Struct, as the registry hands it over).
func DecodeTyped(m proto.Message, v any) error {
	st, ok := m.(*structpb.Struct)
	if !ok {
		return errors.New("a TypedStruct config is expected")
	}
	return decodeStruct(st, v)
}

func decodeStruct(s *structpb.Struct, v any) error {
	m := s.AsMap()
	dropNulls(m)
	if err := checkKeys(m, reflect.TypeOf(v), ""); err != nil {
		return err
	}
	js, err := json.Marshal(m)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return At(te.Field, fmt.Errorf("wrong type: %s, want %s", te.Value, te.Type))
		}
		return err
	}
	return nil
}

var rawMessage = reflect.TypeOf(json.RawMessage{})

// checkKeys walks val (decoded JSON) along t, refusing keys no field of
// t's structs names exactly.
func checkKeys(val any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == rawMessage:
		return nil
	case t.Kind() == reflect.Struct:
		m, ok := val.(map[string]any)
		if !ok {
			return nil // the decoder reports the type
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			ft, ok := fields[k]
			if !ok {
				return At(p, errors.New("unknown field"))
			}
			if err := checkKeys(m[k], ft, p); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		list, ok := val.([]any)
		if !ok {
			return nil
		}
		for i, e := range list {
			if err := checkKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Map:
		m, ok := val.(map[string]any)
		if !ok {
			return nil
		}
		for k, e := range m {
			if err := checkKeys(e, t.Elem(), path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

// dropNulls removes null values: a field given as null is absent.
func dropNulls(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e == nil {
				delete(x, k)
				continue
			}
			dropNulls(e)
		}
	case []any:
		for _, e := range x {
			dropNulls(e)
		}
	}
}
