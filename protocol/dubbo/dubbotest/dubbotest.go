// Package dubbotest is a small Dubbo 2 consumer and provider on
// dubbo-go-hessian2, for tests and the benchmark load client: frames are
// built and read here independently of the codec under test.
package dubbotest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// Frame header bits (the codec's are not reused: this is the peer).
const (
	headerLen   = 16
	flagRequest = 0x80
	flagTwoWay  = 0x40
	flagEvent   = 0x20
	hessian2ID  = 2

	// Response body types.
	respException     = 0
	respValue         = 1
	respNull          = 2
	respExceptionAtt  = 3
	respValueAtt      = 4
	respNullAtt       = 5
	StatusOK          = 20
	StatusServiceErr  = 70
	DefaultDubboVer   = "2.0.2"
	defaultAttachment = "dubbo"
)

// Call is one request.
type Call struct {
	Service, Version, Method string
	// Types is the JVM parameter types descriptor; empty: derived from
	// Args (strings, int32, int64, bool, lists and maps).
	Types       string
	Args        []any
	Attachments map[string]string
	OneWay      bool
}

// EncodeRequest builds a request frame.
func EncodeRequest(id uint64, c *Call) ([]byte, error) {
	e := hessian.NewEncoder()
	types := c.Types
	if types == "" {
		for _, a := range c.Args {
			types += descriptor(a)
		}
	}
	att := map[interface{}]interface{}{"path": c.Service, "interface": c.Service}
	if c.Version != "" {
		att["version"] = c.Version
	}
	for k, v := range c.Attachments {
		att[k] = v
	}
	for _, v := range []any{DefaultDubboVer, c.Service, c.Version, c.Method, types} {
		if err := e.Encode(v); err != nil {
			return nil, err
		}
	}
	for i, a := range c.Args {
		if err := e.Encode(a); err != nil {
			return nil, fmt.Errorf("argument %d: %w", i, err)
		}
	}
	if err := e.Encode(att); err != nil {
		return nil, err
	}
	flag := byte(flagRequest | hessian2ID)
	if !c.OneWay {
		flag |= flagTwoWay
	}
	return frame(flag, 0, id, e.Buffer()), nil
}

func descriptor(a any) string {
	switch a.(type) {
	case int32:
		return "I"
	case int64:
		return "J"
	case bool:
		return "Z"
	case float64:
		return "D"
	case []any, []string:
		return "Ljava/util/List;"
	case map[any]any, map[string]any:
		return "Ljava/util/Map;"
	}
	return "Ljava/lang/String;"
}

func frame(flag, status byte, id uint64, body []byte) []byte {
	b := make([]byte, headerLen, headerLen+len(body))
	b[0], b[1], b[2], b[3] = 0xda, 0xbb, flag, status
	binary.BigEndian.PutUint64(b[4:], id)
	binary.BigEndian.PutUint32(b[12:], uint32(len(body)))
	return append(b, body...)
}

// Heartbeat builds a heartbeat request.
func Heartbeat(id uint64) []byte {
	return frame(flagRequest|flagTwoWay|flagEvent|hessian2ID, 0, id, []byte{'N'})
}

// EncodeResponse builds a reply: a value, or an exception message
// (sent as a Java exception would be, a string here) when exc is set.
func EncodeResponse(id uint64, value any, exc string) []byte {
	e := hessian.NewEncoder()
	switch {
	case exc != "":
		e.Encode(int32(respExceptionAtt))
		e.Encode(exc)
	case value == nil:
		e.Encode(int32(respNullAtt))
	default:
		e.Encode(int32(respValueAtt))
		e.Encode(value)
	}
	e.Encode(map[interface{}]interface{}{defaultAttachment: DefaultDubboVer})
	return frame(hessian2ID, StatusOK, id, e.Buffer())
}

// Frame is a frame read back.
type Frame struct {
	Flag, Status byte
	ID           uint64
	Body         []byte
}

func (f *Frame) Event() bool     { return f.Flag&flagEvent != 0 }
func (f *Frame) Request() bool   { return f.Flag&flagRequest != 0 }
func (f *Frame) TwoWay() bool    { return f.Flag&flagTwoWay != 0 }
func (f *Frame) Heartbeat() bool { return f.Event() && len(f.Body) <= 1 }

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (*Frame, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if h[0] != 0xda || h[1] != 0xbb {
		return nil, fmt.Errorf("bad magic % x", h[:2])
	}
	n := binary.BigEndian.Uint32(h[12:])
	if n > 64<<20 {
		return nil, fmt.Errorf("body length %d", n)
	}
	f := &Frame{Flag: h[2], Status: h[3], ID: binary.BigEndian.Uint64(h[4:]), Body: make([]byte, n)}
	_, err := io.ReadFull(r, f.Body)
	return f, err
}

// Result is a reply decoded.
type Result struct {
	Status    byte
	Value     any
	Exception string // an exception reply's message
	Error     string // a non-OK status's message
}

// DecodeResponse reads a reply's body.
func DecodeResponse(f *Frame) (*Result, error) {
	r := &Result{Status: f.Status}
	d := hessian.NewDecoderWithSkip(f.Body)
	if f.Status != StatusOK {
		v, err := d.Decode()
		if err != nil {
			return nil, err
		}
		r.Error = fmt.Sprint(v)
		return r, nil
	}
	t, err := d.Decode()
	if err != nil {
		return nil, err
	}
	kind, ok := t.(int32)
	if !ok {
		return nil, fmt.Errorf("response type %T", t)
	}
	switch kind {
	case respValue, respValueAtt:
		r.Value, err = d.Decode()
	case respException, respExceptionAtt:
		var v any
		v, err = d.Decode()
		r.Exception = fmt.Sprint(v)
	case respNull, respNullAtt:
	default:
		err = fmt.Errorf("response type %d", kind)
	}
	return r, err
}

// DecodeRequest reads a request frame back (the provider's side).
func DecodeRequest(f *Frame) (*Call, error) {
	d := hessian.NewDecoderWithSkip(f.Body)
	var head [5]string
	for i := range head {
		v, err := d.Decode()
		if err != nil {
			return nil, err
		}
		s, _ := v.(string)
		head[i] = s
	}
	c := &Call{Service: head[1], Version: head[2], Method: head[3], Types: head[4], OneWay: !f.TwoWay()}
	n, err := countTypes(head[4])
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		v, err := d.Decode()
		if err != nil {
			return nil, err
		}
		c.Args = append(c.Args, v)
	}
	v, err := d.Decode()
	if err != nil {
		return nil, err
	}
	c.Attachments = map[string]string{}
	if m, ok := v.(map[interface{}]interface{}); ok {
		for k, val := range m {
			ks, _ := k.(string)
			vs, _ := val.(string)
			c.Attachments[ks] = vs
		}
	}
	return c, nil
}

func countTypes(desc string) (int, error) {
	n := 0
	for i := 0; i < len(desc); {
		for i < len(desc) && desc[i] == '[' {
			i++
		}
		if i == len(desc) {
			return 0, errors.New("bad types")
		}
		if desc[i] == 'L' {
			for i < len(desc) && desc[i] != ';' {
				i++
			}
		}
		i++
		n++
	}
	return n, nil
}

func newEncoder() *hessian.Encoder { return hessian.NewEncoder() }
