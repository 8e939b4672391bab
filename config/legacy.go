package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Envoy reads its config with protobuf's JSON parser in its lenient mode,
// and configs in the wild (go-control-plane's sample bootstraps among
// them) depend on what that mode accepts and protojson does not:
//
//   - one value where a repeated field expects a list
//     (grpc_services: {envoy_grpc: {...}});
//   - a well-known type written as the message it is: a Duration or a
//     Timestamp as {seconds, nanos} (refresh_delay: {nanos: 500000000}),
//     a wrapper as {value: 5}, a Struct as {fields: {k: {string_value: x}}},
//     a Value as {string_value: x}, a ListValue as {values: [...]}.
//
// legacyJSON rewrites those into canonical proto3 JSON, guided by the
// message descriptors (and by "@type" inside Any), before protojson
// decodes strictly. Anything it does not recognise is left for protojson
// to judge.

// normalizeJSON decodes js, rewrites it for md and encodes it again
// (compact, keys sorted).
func normalizeJSON(js []byte, md protoreflect.MessageDescriptor) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	v = legacyMessage(v, md)
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

// valueKinds are google.protobuf.Value's oneof fields.
var valueKinds = map[string]bool{"null_value": true, "number_value": true, "string_value": true,
	"bool_value": true, "struct_value": true, "list_value": true,
	"nullValue": true, "numberValue": true, "stringValue": true, "boolValue": true, "structValue": true, "listValue": true}

// legacyMessage rewrites v, the JSON of a message of type md.
func legacyMessage(v any, md protoreflect.MessageDescriptor) any {
	obj, ok := v.(map[string]any)
	if !ok {
		return v
	}
	switch md.FullName() {
	case "google.protobuf.Duration":
		if sec, ns, ok := secondsNanos(obj); ok {
			return formatDuration(sec, ns)
		}
		return v
	case "google.protobuf.Timestamp":
		if sec, ns, ok := secondsNanos(obj); ok {
			return time.Unix(sec, ns).UTC().Format(time.RFC3339Nano)
		}
		return v
	case "google.protobuf.Struct":
		return legacyStruct(obj)
	case "google.protobuf.Value":
		return legacyValue(obj)
	case "google.protobuf.ListValue":
		if vals, ok := obj["values"].([]any); ok && len(obj) == 1 {
			return legacyList(vals)
		}
		return v
	case "google.protobuf.Any":
		return legacyAny(obj)
	case "google.protobuf.FieldMask", "google.protobuf.Empty":
		return v
	}
	if isWrapper(md) {
		if inner, ok := obj["value"]; ok && len(obj) == 1 {
			return inner
		}
		return v
	}
	fields := md.Fields()
	for k, fv := range obj {
		fd := fields.ByName(protoreflect.Name(k))
		if fd == nil {
			fd = fields.ByJSONName(k)
		}
		if fd == nil {
			continue // protojson will name it
		}
		obj[k] = legacyField(fv, fd)
	}
	return obj
}

// legacyField rewrites the value of one field.
func legacyField(v any, fd protoreflect.FieldDescriptor) any {
	switch {
	case v == nil:
		return nil
	case fd.IsMap():
		m, ok := v.(map[string]any)
		if ok && fd.MapValue().Message() != nil {
			for k, mv := range m {
				m[k] = legacyMessage(mv, fd.MapValue().Message())
			}
		}
		return v
	case fd.IsList():
		list, ok := v.([]any)
		if !ok {
			list = []any{v} // one value for a list: a list of one
		}
		if fd.Message() != nil {
			for i, e := range list {
				list[i] = legacyMessage(e, fd.Message())
			}
		}
		return list
	case fd.Message() != nil:
		return legacyMessage(v, fd.Message())
	}
	return v
}

// legacyAny rewrites the fields of an Any's message, found by "@type".
func legacyAny(obj map[string]any) any {
	url, _ := obj["@type"].(string)
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return obj // checkTypeURLs names it
	}
	md := mt.Descriptor()
	if md.FullName().Parent() == "google.protobuf" {
		if inner, ok := obj["value"]; ok {
			obj["value"] = legacyMessage(inner, md)
		}
		return obj
	}
	for k, fv := range obj {
		if k == "@type" {
			continue
		}
		fd := md.Fields().ByName(protoreflect.Name(k))
		if fd == nil {
			fd = md.Fields().ByJSONName(k)
		}
		if fd != nil {
			obj[k] = legacyField(fv, fd)
		}
	}
	return obj
}

// legacyStruct turns {fields: {k: Value-as-message}} into a plain object;
// any other object is a Struct already, whose values may be
// Value-as-message.
func legacyStruct(obj map[string]any) any {
	if f, ok := obj["fields"].(map[string]any); ok && len(obj) == 1 && allValueMessages(f) {
		obj = f
	}
	for k, fv := range obj {
		if m, ok := fv.(map[string]any); ok {
			obj[k] = legacyValue(m)
		}
	}
	return obj
}

// allValueMessages reports whether every entry is a Value written as a
// message (one key, a Value kind), so that a Struct with a real key named
// "fields" is left alone.
func allValueMessages(m map[string]any) bool {
	for _, v := range m {
		o, ok := v.(map[string]any)
		if !ok || len(o) != 1 {
			return false
		}
		for k := range o {
			if !valueKinds[k] {
				return false
			}
		}
	}
	return len(m) > 0
}

// legacyValue turns {string_value: x} and its kin into x; other objects
// are Structs.
func legacyValue(obj map[string]any) any {
	if len(obj) == 1 {
		for k, inner := range obj {
			if !valueKinds[k] {
				break
			}
			switch strings.ReplaceAll(strings.ToLower(k), "_", "") {
			case "nullvalue":
				return nil
			case "structvalue":
				if m, ok := inner.(map[string]any); ok {
					return legacyStruct(m)
				}
			case "listvalue":
				if m, ok := inner.(map[string]any); ok {
					if vals, ok := m["values"].([]any); ok {
						return legacyList(vals)
					}
				}
				if l, ok := inner.([]any); ok {
					return legacyList(l)
				}
			}
			return inner
		}
	}
	return legacyStruct(obj)
}

func legacyList(vals []any) []any {
	for i, e := range vals {
		if m, ok := e.(map[string]any); ok {
			vals[i] = legacyValue(m)
		}
	}
	return vals
}

func isWrapper(md protoreflect.MessageDescriptor) bool {
	if md.FullName().Parent() != "google.protobuf" {
		return false
	}
	switch md.Name() {
	case "DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value", "UInt32Value", "BoolValue", "StringValue", "BytesValue":
		return true
	}
	return false
}

// secondsNanos reads {seconds, nanos} (each optional, numbers or numeric
// strings); ok is false for any other object.
func secondsNanos(obj map[string]any) (sec, ns int64, ok bool) {
	if len(obj) == 0 {
		return 0, 0, false
	}
	for k, v := range obj {
		n, err := strconv.ParseInt(fmt.Sprint(v), 10, 64)
		if err != nil {
			return 0, 0, false
		}
		switch k {
		case "seconds":
			sec = n
		case "nanos":
			if n <= -1e9 || n >= 1e9 {
				return 0, 0, false // out of range: protojson refuses the object
			}
			ns = n
		default:
			return 0, 0, false
		}
	}
	return sec, ns, true
}

// formatDuration writes seconds and nanos as proto3 JSON does: "1.5s",
// "-0.000000001s" (nanos share the sign of seconds; protojson checks the
// range).
func formatDuration(sec, ns int64) string {
	sign := ""
	if sec < 0 || ns < 0 {
		sign = "-"
	}
	if sec < 0 {
		sec = -sec
	}
	if ns < 0 {
		ns = -ns
	}
	s := strconv.FormatInt(sec, 10)
	if ns != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%09d", ns), "0")
	}
	return sign + s + "s"
}
