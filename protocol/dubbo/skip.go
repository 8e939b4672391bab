package dubbo

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A hessian2 value walker: it finds where a value ends without building
// it, and checks what a decoder would trust. Every length a value
// declares (list sizes, class field counts, string and binary lengths)
// must fit in the bytes left, and nesting is bounded, so a hostile body
// cannot make dubbo-go-hessian2 allocate gigabytes for a list that is
// not there or recurse without end: the library decodes only what this
// walker accepted.

// maxDepth bounds nesting (lists, maps and objects inside each other).
const maxDepth = 64

var errDepth = errors.New("hessian2 value nested too deep")

type walker struct {
	classes []int // field counts of the class definitions seen, by index
}

func need(b []byte, n int) error {
	if n < 0 || len(b) < n {
		return errShort
	}
	return nil
}

// value skips one value.
func (w *walker) value(b []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errDepth
	}
	if len(b) == 0 {
		return nil, errShort
	}
	tag := b[0]
	switch {
	case tag == 'N' || tag == 'T' || tag == 'F':
		return b[1:], nil
	case tag >= 0x80 && tag <= 0xbf, tag >= 0xd8 && tag <= 0xef, tag == 0x5b || tag == 0x5c:
		return b[1:], nil // compact int, compact long, double 0.0 / 1.0
	case tag >= 0xc0 && tag <= 0xcf, tag >= 0xf0 && tag <= 0xff, tag == 0x5d:
		return fixed(b, 2)
	case tag >= 0xd0 && tag <= 0xd7, tag >= 0x38 && tag <= 0x3f, tag == 0x5e:
		return fixed(b, 3)
	case tag == 'I' || tag == 0x59 || tag == 0x5f || tag == 0x4b:
		return fixed(b, 5) // int, long as int, double as float, date in minutes
	case tag == 'L' || tag == 'D' || tag == 0x4a:
		return fixed(b, 9) // long, double, date
	case tag <= 0x1f, tag >= 0x30 && tag <= 0x33, tag == 'S', tag == 'R':
		return skipString(b)
	case tag >= 0x20 && tag <= 0x2f:
		return fixed(b, 1+int(tag-0x20))
	case tag >= 0x34 && tag <= 0x37:
		if err := need(b, 2); err != nil {
			return nil, err
		}
		return fixed(b, 2+int(tag-0x34)<<8|int(b[1]))
	case tag == 'B' || tag == 'A':
		return skipBinary(b)
	case tag == 'Q':
		return w.intValue(b[1:])
	case tag == 'C':
		return w.classDef(b[1:], depth)
	case tag == 'O':
		rest, ref, err := readInt(b[1:])
		if err != nil {
			return nil, err
		}
		return w.object(rest, ref, depth)
	case tag >= 0x60 && tag <= 0x6f:
		return w.object(b[1:], int64(tag-0x60), depth)
	case tag == 'H':
		return w.untilZ(b[1:], depth, 2)
	case tag == 'M':
		rest, err := w.typeName(b[1:])
		if err != nil {
			return nil, err
		}
		return w.untilZ(rest, depth, 2)
	case tag == 'U':
		rest, err := w.typeName(b[1:])
		if err != nil {
			return nil, err
		}
		return w.untilZ(rest, depth, 1)
	case tag == 'W':
		return w.untilZ(b[1:], depth, 1)
	case tag == 'V':
		rest, err := w.typeName(b[1:])
		if err != nil {
			return nil, err
		}
		rest, n, err := readInt(rest)
		if err != nil {
			return nil, err
		}
		return w.values(rest, n, depth)
	case tag == 'X':
		rest, n, err := readInt(b[1:])
		if err != nil {
			return nil, err
		}
		return w.values(rest, n, depth)
	case tag >= 0x70 && tag <= 0x77:
		rest, err := w.typeName(b[1:])
		if err != nil {
			return nil, err
		}
		return w.values(rest, int64(tag-0x70), depth)
	case tag >= 0x78 && tag <= 0x7f:
		return w.values(b[1:], int64(tag-0x78), depth)
	}
	return nil, fmt.Errorf("hessian2 tag 0x%02x is not a value", tag)
}

func fixed(b []byte, n int) ([]byte, error) {
	if err := need(b, n); err != nil {
		return nil, err
	}
	return b[n:], nil
}

// readInt reads an int value (as a list length or class reference).
func readInt(b []byte) ([]byte, int64, error) {
	if len(b) == 0 {
		return nil, 0, errShort
	}
	tag := b[0]
	switch {
	case tag >= 0x80 && tag <= 0xbf:
		return b[1:], int64(tag) - 0x90, nil
	case tag >= 0xc0 && tag <= 0xcf:
		if err := need(b, 2); err != nil {
			return nil, 0, err
		}
		return b[2:], (int64(tag)-0xc8)<<8 | int64(b[1]), nil
	case tag >= 0xd0 && tag <= 0xd7:
		if err := need(b, 3); err != nil {
			return nil, 0, err
		}
		return b[3:], (int64(tag)-0xd4)<<16 | int64(b[1])<<8 | int64(b[2]), nil
	case tag == 'I':
		if err := need(b, 5); err != nil {
			return nil, 0, err
		}
		return b[5:], int64(int32(binary.BigEndian.Uint32(b[1:5]))), nil
	}
	return nil, 0, fmt.Errorf("hessian2 tag 0x%02x where an int belongs", tag)
}

func (w *walker) intValue(b []byte) ([]byte, error) {
	rest, _, err := readInt(b)
	return rest, err
}

// typeName skips a list's or map's type: a string, or a reference.
func (w *walker) typeName(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errShort
	}
	if t := b[0]; t <= 0x1f || t >= 0x30 && t <= 0x33 || t == 'S' || t == 'R' {
		return skipString(b)
	}
	return w.intValue(b)
}

// values skips n values; n must be possible in the bytes left.
func (w *walker) values(b []byte, n int64, depth int) ([]byte, error) {
	if n < 0 || n > int64(len(b)) {
		return nil, fmt.Errorf("hessian2 list of %d values in %d bytes", n, len(b))
	}
	var err error
	for ; n > 0; n-- {
		if b, err = w.value(b, depth+1); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// untilZ skips values, per at a time (a map's key and value), up to the
// 'Z' that ends them.
func (w *walker) untilZ(b []byte, depth, per int) ([]byte, error) {
	var err error
	for {
		if len(b) == 0 {
			return nil, errShort
		}
		if b[0] == 'Z' {
			return b[1:], nil
		}
		for i := 0; i < per; i++ {
			if b, err = w.value(b, depth+1); err != nil {
				return nil, err
			}
		}
	}
}

// classDef reads a class definition ('C' name count field-names), then
// the value that follows it (a definition is not a value itself).
func (w *walker) classDef(b []byte, depth int) ([]byte, error) {
	rest, err := skipString(b)
	if err != nil {
		return nil, err
	}
	rest, n, err := readInt(rest)
	if err != nil {
		return nil, err
	}
	if n < 0 || n > int64(len(rest)) {
		return nil, fmt.Errorf("hessian2 class of %d fields in %d bytes", n, len(rest))
	}
	for i := int64(0); i < n; i++ {
		if rest, err = skipString(rest); err != nil {
			return nil, err
		}
	}
	w.classes = append(w.classes, int(n))
	return w.value(rest, depth)
}

func (w *walker) object(b []byte, ref int64, depth int) ([]byte, error) {
	if ref < 0 || ref >= int64(len(w.classes)) {
		return nil, fmt.Errorf("hessian2 object of undefined class %d", ref)
	}
	return w.values(b, int64(w.classes[ref]), depth)
}

// skipString skips a string, chunks included.
func skipString(b []byte) ([]byte, error) {
	for {
		if len(b) == 0 {
			return nil, errShort
		}
		tag := b[0]
		var chars int
		final := true
		switch {
		case tag <= 0x1f:
			chars, b = int(tag), b[1:]
		case tag >= 0x30 && tag <= 0x33:
			if err := need(b, 2); err != nil {
				return nil, err
			}
			chars, b = int(tag-0x30)<<8|int(b[1]), b[2:]
		case tag == 'S' || tag == 'R':
			if err := need(b, 3); err != nil {
				return nil, err
			}
			chars, b, final = int(b[1])<<8|int(b[2]), b[3:], tag == 'S'
		default:
			return nil, fmt.Errorf("hessian2 tag 0x%02x where a string belongs", tag)
		}
		n := 0
		for ; chars > 0; chars-- {
			// Eight ASCII characters at a time (payload strings are
			// long; routing keys are not).
			for chars >= 8 && n+8 <= len(b) && binary.LittleEndian.Uint64(b[n:])&0x8080808080808080 == 0 {
				n += 8
				chars -= 8
			}
			if chars == 0 {
				break
			}
			if n >= len(b) {
				return nil, errShort
			}
			switch c := b[n]; {
			case c < 0x80:
				n++
			case c&0xe0 == 0xc0:
				n += 2
			case c&0xf0 == 0xe0:
				n += 3
			default:
				return nil, fmt.Errorf("bad utf-8 byte 0x%02x", c)
			}
		}
		if n > len(b) {
			return nil, errShort
		}
		b = b[n:]
		if final {
			return b, nil
		}
	}
}

func skipBinary(b []byte) ([]byte, error) {
	for {
		if len(b) == 0 {
			return nil, errShort
		}
		tag := b[0]
		switch {
		case tag == 'B' || tag == 'A':
			if err := need(b, 3); err != nil {
				return nil, err
			}
			n := int(b[1])<<8 | int(b[2])
			if err := need(b, 3+n); err != nil {
				return nil, err
			}
			b = b[3+n:]
			if tag == 'B' {
				return b, nil
			}
		case tag >= 0x20 && tag <= 0x2f:
			return fixed(b, 1+int(tag-0x20))
		case tag >= 0x34 && tag <= 0x37:
			if err := need(b, 2); err != nil {
				return nil, err
			}
			return fixed(b, 2+int(tag-0x34)<<8|int(b[1]))
		default:
			return nil, fmt.Errorf("hessian2 tag 0x%02x inside a binary", tag)
		}
	}
}
