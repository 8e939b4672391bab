package accesslog

import (
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// Formatter renders an Entry as one log line: a text format, or a JSON
// object (json_format), each value a format string or a constant.
type Formatter struct {
	text      []piece
	json      []jsonField
	isJSON    bool
	omitEmpty bool
	// allStrings: FileAccessLog's deprecated json_format, whose values
	// are all strings (a missing one "-").
	allStrings bool
}

type jsonField struct {
	key    string
	pieces []piece     // a format string value
	raw    []byte      // a constant value, rendered
	nested []jsonField // a nested object
	isObj  bool
}

// NewText compiles a text format ("" is DefaultFormat). omitEmpty writes
// nothing, instead of "-", for a value that is missing.
func NewText(format string, omitEmpty bool) (*Formatter, error) {
	if format == "" {
		format = DefaultFormat
	}
	p, err := parseText(format)
	if err != nil {
		return nil, err
	}
	return &Formatter{text: p, omitEmpty: omitEmpty}, nil
}

// NewJSON compiles a json_format: each string value is a format string;
// a value that is exactly one numeric operator (%RESPONSE_CODE%,
// %DURATION%, ...) is written as a number, one that is missing as null
// (omitted with omitEmpty). Keys are written sorted.
func NewJSON(s *structpb.Struct, omitEmpty bool) (*Formatter, error) {
	fields, err := jsonFields(s, "json_format")
	if err != nil {
		return nil, err
	}
	return &Formatter{json: fields, isJSON: true, omitEmpty: omitEmpty}, nil
}

func jsonFields(s *structpb.Struct, path string) ([]jsonField, error) {
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]jsonField, 0, len(keys))
	for _, k := range keys {
		f := jsonField{key: k}
		p := path + "." + k
		switch v := s.GetFields()[k].GetKind().(type) {
		case *structpb.Value_StringValue:
			pieces, err := parseText(v.StringValue)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			f.pieces = pieces
		case *structpb.Value_NumberValue:
			f.raw = strconv.AppendFloat(nil, v.NumberValue, 'g', -1, 64)
		case *structpb.Value_BoolValue:
			f.raw = strconv.AppendBool(nil, v.BoolValue)
		case *structpb.Value_NullValue:
			f.raw = []byte("null")
		case *structpb.Value_StructValue:
			nested, err := jsonFields(v.StructValue, p)
			if err != nil {
				return nil, err
			}
			f.nested, f.isObj = nested, true
		default:
			return nil, fmt.Errorf("%s: a list is not a supported value (use a string, number, bool or object)", p)
		}
		out = append(out, f)
	}
	return out, nil
}

// Append appends e's line to b; tmp is scratch space the caller keeps.
func (f *Formatter) Append(b []byte, e *Entry, tmp *[]byte) []byte {
	if f.isJSON {
		b = f.appendObject(b, f.json, e, tmp)
		return append(b, '\n')
	}
	return f.appendText(b, f.text, e)
}

func (f *Formatter) appendText(b []byte, pieces []piece, e *Entry) []byte {
	for i := range pieces {
		var ok bool
		if b, ok = pieces[i].appendValue(b, e); !ok && !f.omitEmpty {
			b = append(b, '-')
		}
	}
	return b
}

func (f *Formatter) appendObject(b []byte, fields []jsonField, e *Entry, tmp *[]byte) []byte {
	b = append(b, '{')
	first := true
	for i := range fields {
		fd := &fields[i]
		mark := len(b)
		if !first {
			b = append(b, ',')
		}
		b = appendJSONString(b, fd.key)
		b = append(b, ':')
		switch {
		case fd.isObj:
			b = f.appendObject(b, fd.nested, e, tmp)
		case fd.raw != nil:
			b = append(b, fd.raw...)
		case len(fd.pieces) == 1 && fd.pieces[0].kind != opLiteral:
			p := &fd.pieces[0]
			v, ok := p.appendValue((*tmp)[:0], e)
			*tmp = v
			switch {
			case !ok || len(v) == 0 && f.omitEmpty:
				if f.omitEmpty {
					b = b[:mark]
					continue
				}
				if f.allStrings {
					b = append(b, `"-"`...)
				} else {
					b = append(b, "null"...)
				}
			case p.numeric() && !f.allStrings:
				b = append(b, v...)
			default:
				b = appendJSONString(b, v)
			}
		default:
			v := f.appendText((*tmp)[:0], fd.pieces, e)
			*tmp = v
			if len(v) == 0 && f.omitEmpty {
				b = b[:mark]
				continue
			}
			b = appendJSONString(b, v)
		}
		first = false
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as a JSON string; invalid UTF-8
// becomes U+FFFD.
func appendJSONString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\ufffd"...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
