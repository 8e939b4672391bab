package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"sigs.k8s.io/yaml"
)

// LoadFile reads a Bootstrap from path (YAML for .yaml/.yml, else JSON) and
// merges overlay (YAML, as --config-yaml) over it. Either may be empty, not
// both. The result has passed the generated ValidateAll(); the semantic
// checks are the builders'.
func LoadFile(path, overlay string) (*bootstrapv3.Bootstrap, error) {
	if path == "" && overlay == "" {
		return nil, errors.New("no configuration: give --config-path or --config-yaml")
	}
	b := &bootstrapv3.Bootstrap{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		ext := strings.ToLower(filepath.Ext(path))
		if b, err = Parse(data, ext == ".yaml" || ext == ".yml"); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if overlay != "" {
		o, err := Parse([]byte(overlay), true)
		if err != nil {
			return nil, fmt.Errorf("--config-yaml: %w", err)
		}
		proto.Merge(b, o)
	}
	if err := Validate(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Parse decodes one Bootstrap document strictly: unknown fields and unknown
// type URLs are errors that name their path. It does not validate.
func Parse(data []byte, isYAML bool) (*bootstrapv3.Bootstrap, error) {
	js := data
	if isYAML {
		var err error
		if js, err = yaml.YAMLToJSON(data); err != nil {
			return nil, fmt.Errorf("yaml: %w", err)
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, js); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	js, err := normalizeJSON(compact.Bytes(), b.ProtoReflect().Descriptor())
	if err != nil {
		return nil, err
	}
	if err := checkTypeURLs(js); err != nil {
		return nil, err
	}
	if err := protojson.Unmarshal(js, b); err != nil {
		return nil, decodeError(js, err)
	}
	return b, nil
}

// Validate runs the generated ValidateAll and returns every violation with
// its path.
func Validate(b *bootstrapv3.Bootstrap) error {
	return Join(ValidationErrors(b.ValidateAll()))
}

var lineCol = regexp.MustCompile(`\(line (\d+):(\d+)\): `)

// decodeError rewrites protojson's "(line 1:345): unknown field" into the
// JSON path at that offset.
func decodeError(js []byte, err error) error {
	msg := err.Error()
	m := lineCol.FindStringSubmatchIndex(msg)
	if m == nil {
		return err
	}
	col, _ := strconv.Atoi(msg[m[4]:m[5]])
	rest := msg[m[1]:]
	// An unknown field is reported at its key: read the key too.
	off := col - 1
	if strings.HasPrefix(rest, "unknown field") {
		off++
	}
	path := pathAt(js, off)
	return &PathError{Path: path, Err: errors.New(rest)}
}

// pathAt returns the path of the value being decoded at byte offset off of
// the compact JSON js, as "static_resources.listeners[0].name".
func pathAt(js []byte, off int) string {
	type frame struct {
		array bool
		key   string
		index int
	}
	var stack []frame
	dec := json.NewDecoder(bytes.NewReader(js))
	expectKey := false
	for {
		if int(dec.InputOffset()) >= off {
			break
		}
		tok, err := dec.Token()
		if err != nil {
			break
		}
		top := len(stack) - 1
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				stack = append(stack, frame{array: t == '['})
				expectKey = t == '{'
				continue
			default:
				stack = stack[:top]
				if top > 0 {
					advance(&stack[top-1].index, stack[top-1].array)
				}
			}
		default:
			if top >= 0 && !stack[top].array && expectKey {
				stack[top].key = fmt.Sprint(t)
				expectKey = false
				continue
			}
			if top >= 0 {
				advance(&stack[top].index, stack[top].array)
			}
		}
		if top >= 0 && !stack[len(stack)-1].array {
			expectKey = true
		}
	}
	var b strings.Builder
	for _, f := range stack {
		if f.array {
			fmt.Fprintf(&b, "[%d]", f.index)
		} else if f.key != "" {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(f.key)
		}
	}
	return b.String()
}

func advance(i *int, array bool) {
	if array {
		*i++
	}
}

// checkTypeURLs finds every "@type" in js and fails on one that no linked-in
// API type has, naming its path and the extension types we build.
func checkTypeURLs(js []byte) error {
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	var errs []error
	walkJSON(v, "", func(path, url string) {
		name := url
		if i := strings.LastIndexByte(url, '/'); i >= 0 {
			name = url[i+1:]
		}
		if _, err := protoregistry.GlobalTypes.FindMessageByURL(url); err != nil {
			errs = append(errs, &PathError{Path: path, Err: fmt.Errorf("unsupported type URL %q (%s is not a type this build knows; supported extensions: %s)",
				url, name, strings.Join(allTypeURLs(), ", "))})
		}
	})
	return Join(errs)
}

func allTypeURLs() []string {
	var out []string
	for _, k := range []Kind{ListenerFilter, NetworkFilter, HTTPFilter, Protocol, LoadBalancer} {
		out = append(out, TypeURLs(k)...)
	}
	return out
}

func walkJSON(v any, path string, fn func(path, url string)) {
	switch t := v.(type) {
	case map[string]any:
		if u, ok := t["@type"].(string); ok {
			fn(path, u)
		}
		for k, c := range t {
			walkJSON(c, joinPath(path, k), fn)
		}
	case []any:
		for i, c := range t {
			walkJSON(c, fmt.Sprintf("%s[%d]", path, i), fn)
		}
	}
}
