package accesslog

import (
	"fmt"
	"strconv"
	"time"
)

// timeFormat is a compiled strftime format for %START_TIME(...)%, as
// Envoy reads it: the C conversions plus %E<n>S (seconds with n
// fraction digits), %<n>f (n fraction digits; %f: 9) and %s (Unix
// seconds). Times are UTC.
type timeFormat []timePiece

type timePiece struct {
	conv byte // 0: lit
	n    int  // fraction digits
	lit  string
}

// defaultTimeFormat is Envoy's %START_TIME%: 2026-12-04T18:02:03.123Z.
var defaultTimeFormat = mustTimeFormat("%Y-%m-%dT%H:%M:%E3SZ")

func mustTimeFormat(s string) timeFormat {
	f, err := parseTimeFormat(s)
	if err != nil {
		panic(err)
	}
	return f
}

func parseTimeFormat(s string) (timeFormat, error) {
	var f timeFormat
	lit := func(t string) {
		if n := len(f); n > 0 && f[n-1].conv == 0 {
			f[n-1].lit += t
			return
		}
		f = append(f, timePiece{lit: t})
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			j := i
			for j < len(s) && s[j] != '%' {
				j++
			}
			lit(s[i:j])
			i = j - 1
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("time format %q ends in a lone %%", s)
		}
		c := s[i+1]
		switch {
		case c == '%':
			lit("%")
			i++
		case c == 'E' && i+3 < len(s) && s[i+3] == 'S' && (s[i+2] >= '1' && s[i+2] <= '9' || s[i+2] == '*'):
			n := 9
			if s[i+2] != '*' {
				n = int(s[i+2] - '0')
			}
			f = append(f, timePiece{conv: 'S', n: n})
			i += 3
		case c >= '1' && c <= '9' && i+2 < len(s) && s[i+2] == 'f':
			f = append(f, timePiece{conv: 'f', n: int(c - '0')})
			i += 2
		case c == 'f':
			f = append(f, timePiece{conv: 'f', n: 9})
			i++
		case stringsContains("YmdHMSyjaAbBhepIzZsTFDRnt", c):
			f = append(f, timePiece{conv: c})
			i++
		default:
			return nil, fmt.Errorf("time format %q: unknown conversion %%%c", s, c)
		}
	}
	return f, nil
}

func stringsContains(set string, c byte) bool {
	for i := 0; i < len(set); i++ {
		if set[i] == c {
			return true
		}
	}
	return false
}

func (f timeFormat) append(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	for _, p := range f {
		switch p.conv {
		case 0:
			b = append(b, p.lit...)
		case 'Y':
			b = strconv.AppendInt(b, int64(year), 10)
		case 'm':
			b = pad2(b, int(month))
		case 'd':
			b = pad2(b, day)
		case 'e':
			if day < 10 {
				b = append(b, ' ')
			}
			b = strconv.AppendInt(b, int64(day), 10)
		case 'H':
			b = pad2(b, hour)
		case 'I':
			h := hour % 12
			if h == 0 {
				h = 12
			}
			b = pad2(b, h)
		case 'p':
			if hour < 12 {
				b = append(b, "AM"...)
			} else {
				b = append(b, "PM"...)
			}
		case 'M':
			b = pad2(b, minute)
		case 'S':
			b = pad2(b, sec)
			if p.n > 0 {
				b = append(b, '.')
				b = fraction(b, t.Nanosecond(), p.n)
			}
		case 'f':
			b = fraction(b, t.Nanosecond(), p.n)
		case 'y':
			b = pad2(b, year%100)
		case 'j':
			d := t.YearDay()
			b = append(b, byte('0'+d/100), byte('0'+d/10%10), byte('0'+d%10))
		case 'a':
			b = append(b, t.Weekday().String()[:3]...)
		case 'A':
			b = append(b, t.Weekday().String()...)
		case 'b', 'h':
			b = append(b, month.String()[:3]...)
		case 'B':
			b = append(b, month.String()...)
		case 'z':
			b = append(b, "+0000"...)
		case 'Z':
			b = append(b, "UTC"...)
		case 's':
			b = strconv.AppendInt(b, t.Unix(), 10)
		case 'T':
			b = pad2(append(pad2(append(pad2(b, hour), ':'), minute), ':'), sec)
		case 'R':
			b = pad2(append(pad2(b, hour), ':'), minute)
		case 'F':
			b = strconv.AppendInt(b, int64(year), 10)
			b = pad2(append(pad2(append(b, '-'), int(month)), '-'), day)
		case 'D':
			b = pad2(append(pad2(append(pad2(b, int(month)), '/'), day), '/'), year%100)
		case 'n':
			b = append(b, '\n')
		case 't':
			b = append(b, '\t')
		}
	}
	return b
}

func pad2(b []byte, v int) []byte {
	return append(b, byte('0'+v/10%10), byte('0'+v%10))
}

// fraction appends the first n of the nanoseconds' 9 digits.
func fraction(b []byte, ns, n int) []byte {
	var d [9]byte
	for i := 8; i >= 0; i-- {
		d[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(b, d[:n]...)
}
