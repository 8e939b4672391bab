package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// PathError is a config error at a field path such as
// "static_resources.listeners[0].filter_chains[0].filters[1]".
type PathError struct {
	Path string
	Err  error
}

func (e *PathError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *PathError) Unwrap() error { return e.Err }

// At prefixes err with a path element; elements join with ".".
func At(path string, err error) error {
	if err == nil {
		return nil
	}
	var pe *PathError
	if errors.As(err, &pe) && pe == err {
		p := path
		if pe.Path != "" {
			if strings.HasPrefix(pe.Path, "[") {
				p += pe.Path
			} else {
				p += "." + pe.Path
			}
		}
		return &PathError{Path: p, Err: pe.Err}
	}
	return &PathError{Path: path, Err: err}
}

// Atf is At with a formatted path.
func Atf(err error, format string, args ...any) error {
	return At(fmt.Sprintf(format, args...), err)
}

// validationError is the shape of the errors protoc-gen-validate generates.
type validationError interface {
	Field() string
	Reason() string
	Cause() error
}

type multiError interface{ AllErrors() []error }

// ValidationErrors turns the error of a generated ValidateAll() into path
// errors, one per violation, each like
// "static_resources.listeners[0].name: value length must be at least 1 runes".
func ValidationErrors(err error) []error {
	if err == nil {
		return nil
	}
	var out []error
	walkValidation(err, "", &out)
	return out
}

func walkValidation(err error, path string, out *[]error) {
	if m, ok := err.(multiError); ok {
		for _, e := range m.AllErrors() {
			walkValidation(e, path, out)
		}
		return
	}
	v, ok := err.(validationError)
	if !ok {
		*out = append(*out, &PathError{Path: path, Err: err})
		return
	}
	p := joinPath(path, snakeField(v.Field()))
	if c := v.Cause(); c != nil {
		walkValidation(c, p, out)
		return
	}
	*out = append(*out, &PathError{Path: p, Err: errors.New(v.Reason())})
}

func joinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case strings.HasPrefix(b, "["):
		return a + b
	}
	return a + "." + b
}

// snakeField turns a generated field name ("FilterChains[0]") into the
// config spelling ("filter_chains[0]"); map keys in brackets are kept.
func snakeField(f string) string {
	var b strings.Builder
	inBracket := false
	for i, r := range f {
		switch {
		case r == '[':
			inBracket = true
		case r == ']':
			inBracket = false
		case !inBracket && unicode.IsUpper(r):
			if i > 0 && f[i-1] != '[' && f[i-1] != '.' {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Errors collects several config errors and prints one per line.
type Errors []error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap exposes the collected errors to errors.Is and errors.As.
func (es Errors) Unwrap() []error { return es }

// Join returns nil for none, the error itself for one, Errors otherwise.
func Join(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return Errors(errs)
}
