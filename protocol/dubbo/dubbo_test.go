package dubbo

import (
	"bytes"
	"strings"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/dubbo/dubbotest"
	"github.com/straitproxy/strait/protocol/rpc"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		in              string
		match, needMore bool
	}{
		{"", false, true},
		{"\xda", false, true},
		{"\xda\xbb", true, false},
		{"\xda\xbb\xc2", true, false},
		{"\xdb", false, false},
		{"\xda\xbc", false, false},
		{"GET / HTTP/1.1\r\n", false, false},
		{"PRI * HTTP/2.0", false, false},
	} {
		m, more := Codec{}.Match([]byte(c.in))
		if m != c.match || more != c.needMore {
			t.Errorf("Match(%q) = %v, %v; want %v, %v", c.in, m, more, c.match, c.needMore)
		}
	}
}

func mustRequest(t testing.TB, id uint64, c *dubbotest.Call) []byte {
	t.Helper()
	b, err := dubbotest.EncodeRequest(id, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseKinds(t *testing.T) {
	call := mustRequest(t, 7, &dubbotest.Call{Service: "a.B", Method: "m", Args: []any{"x"}})
	oneway := mustRequest(t, 8, &dubbotest.Call{Service: "a.B", Method: "m", OneWay: true})
	reply := dubbotest.EncodeResponse(9, "ok", "")
	var pong []byte
	pong = Codec{}.AppendPong(pong, dubbotest.Heartbeat(10))
	readonly := append([]byte(nil), dubbotest.Heartbeat(11)...)
	readonly[15], readonly = 2, append(readonly[:16], 0x01, 'R')
	for _, c := range []struct {
		name  string
		frame []byte
		kind  rpc.Kind
		id    uint64
	}{
		{"call", call, rpc.Call, 7},
		{"one-way", oneway, rpc.OneWay, 8},
		{"reply", reply, rpc.Reply, 9},
		{"heartbeat", dubbotest.Heartbeat(10), rpc.Ping, 10},
		{"heartbeat answer", pong, rpc.Pong, 10},
		{"readonly event", readonly, rpc.Other, 11},
	} {
		f, err := Codec{}.Parse(c.frame[:HeaderLen])
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if f.Kind != c.kind || f.ID != c.id || f.Len != len(c.frame) {
			t.Errorf("%s: %+v; want kind %d id %d len %d", c.name, f, c.kind, c.id, len(c.frame))
		}
	}
	if _, err := (Codec{}).Parse([]byte("GET / HTTP/1.1\r\nHost")); err == nil {
		t.Error("HTTP parsed as Dubbo")
	}
	// A reply's status is the engine's.
	bad := Codec{}.AppendError(nil, call[:HeaderLen], rpc.StatusOverload, "busy")
	if f, _ := (Codec{}).Parse(bad); f.Status != rpc.StatusOverload || bad[3] != StatusThreadPoolExhausted {
		t.Errorf("overload reply: status %d, byte %d", f.Status, bad[3])
	}
}

func TestRequestHeaders(t *testing.T) {
	frame := mustRequest(t, 1, &dubbotest.Call{
		Service: "org.apache.dubbo.UserProvider", Version: "1.0.0", Method: "GetUser",
		Args:        []any{"A001", int32(42), map[any]any{"k": "v"}},
		Attachments: map[string]string{"group": "blue", "Trace-Id": "t1", "timeout": "3000", ":authority": "evil"},
	})
	var h protocol.Headers
	if err := (Codec{}).Request(frame, &h); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		":method": "POST", ":authority": "org.apache.dubbo.UserProvider",
		":path": "/org.apache.dubbo.UserProvider/GetUser", "version": "1.0.0", ":rpc-method": "GetUser",
	}
	for k, v := range want {
		if got := h.GetString(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if h.Has("group") {
		t.Error("attachments read without being asked for")
	}
	h.Reset()
	if err := (Codec{Params: true}).Request(frame, &h); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"group": "blue", "trace-id": "t1", ":param-0": "A001", ":param-1": "42", "version": "1.0.0",
		":rpc-timeout": "3000", ":authority": "org.apache.dubbo.UserProvider"} {
		if got := h.GetString(k); got != v {
			t.Errorf("with attachments: %s = %q, want %q", k, got, v)
		}
	}
	if h.Has(":param-2") {
		t.Error("a map argument became a header")
	}
}

func TestRequestErrors(t *testing.T) {
	good := mustRequest(t, 1, &dubbotest.Call{Service: "a.B", Method: "m", Args: []any{"x"}})
	for _, c := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"truncated head", good[:HeaderLen+10], "truncated"},
		{"no method", mustRequest(t, 1, &dubbotest.Call{Service: "a.B"}), "no method name"},
		{"not a string", append(append([]byte(nil), good[:HeaderLen]...), 0x91), "not a string"},
		{"other serialization", func() []byte { b := append([]byte(nil), good...); b[2] = 0xc0 | 6; return b }(), "serialization 6"},
	} {
		var h protocol.Headers
		err := (Codec{}).Request(c.frame, &h)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	var h protocol.Headers
	bad := append(append([]byte(nil), good...), 0x99) // garbage where the attachments are
	if err := (Codec{Attachments: true}).Request(bad[:len(bad)-1][:len(good)-3], &h); err == nil {
		t.Error("truncated attachments accepted")
	}
}

// TestReadStringAgrees holds the codec's string reader to hessian2's own.
func TestReadStringAgrees(t *testing.T) {
	for _, s := range []string{"", "a", "org.apache.dubbo.UserProvider", strings.Repeat("x", 31), strings.Repeat("y", 32),
		strings.Repeat("z", 1023), strings.Repeat("w", 1024), strings.Repeat("v", 4096), "héllo", "服务", "emoji 😀 ok"} {
		e := hessian.NewEncoder()
		e.Encode(s)
		e.Encode("next")
		got, rest, err := readString(e.Buffer())
		if err != nil || string(got) != utf8OfHessian(t, s) {
			t.Errorf("readString(%.20q): %q, %v", s, got, err)
			continue
		}
		next, _, err := readString(rest)
		if err != nil || string(next) != "next" {
			t.Errorf("after %.20q: %q, %v", s, next, err)
		}
	}
}

// utf8OfHessian is the bytes hessian2 writes for s (supplementary
// characters as surrogate pairs).
func utf8OfHessian(t *testing.T, s string) string {
	e := hessian.NewEncoder()
	e.Encode(s)
	b := e.Buffer()
	switch {
	case b[0] <= 0x1f:
		return string(b[1:])
	case b[0] >= 0x30 && b[0] <= 0x33:
		return string(b[2:])
	}
	return string(b[3:])
}

func TestChunkedStringRefused(t *testing.T) {
	e := hessian.NewEncoder()
	e.Encode(strings.Repeat("v", 5000))
	if _, _, err := readString(e.Buffer()); err == nil || !strings.Contains(err.Error(), "chunked") {
		t.Fatalf("a chunked string: %v", err)
	}
}

// TestBadUTF8Refused: a lead byte must be followed by continuation
// bytes; hessian2 would end such a string elsewhere (fuzz finding).
func TestBadUTF8Refused(t *testing.T) {
	for _, b := range []string{"\x01\xeda0", "\x01\xc3(", "\x02\xe4\xb8", "\x01\xff"} {
		if s, _, err := readString([]byte(b)); err == nil {
			t.Errorf("readString(%q) = %q, want an error", b, s)
		}
	}
	if s, _, err := readString([]byte("\x02\xe4\xb8\xadx")); err != nil || string(s) != "中x" {
		t.Errorf("valid utf-8: %q, %v", s, err)
	}
}

func TestErrorReplyDecodes(t *testing.T) {
	req := mustRequest(t, 77, &dubbotest.Call{Service: "a.B", Method: "m"})
	for st, code := range map[rpc.Status]byte{
		rpc.StatusNoRoute: 60, rpc.StatusUnavailable: 70, rpc.StatusTimeout: 31,
		rpc.StatusBadRequest: 40, rpc.StatusOverload: 100, rpc.StatusError: 80,
	} {
		b := Codec{}.AppendError(nil, req[:HeaderLen], st, "why: "+string(rune('a'+st)))
		f, err := dubbotest.ReadFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r, err := dubbotest.DecodeResponse(f)
		if err != nil || f.ID != 77 || r.Status != code || r.Error != "why: "+string(rune('a'+st)) {
			t.Errorf("status %d: id %d, %+v, %v", st, f.ID, r, err)
		}
	}
}

func TestHeartbeatAnswer(t *testing.T) {
	b := Codec{}.AppendPong(nil, dubbotest.Heartbeat(5))
	f, err := dubbotest.ReadFrame(bytes.NewReader(b))
	if err != nil || f.ID != 5 || !f.Event() || f.Request() || f.Status != 20 {
		t.Fatalf("pong %+v, %v", f, err)
	}
	p := Codec{}.AppendPing(nil, 9)
	if f, _ := (Codec{}).Parse(p); f.Kind != rpc.Ping || f.ID != 9 || f.Len != len(p) {
		t.Fatalf("ping %+v", f)
	}
}

// TestRequestAllocs: the header path allocates nothing without
// attachment routing.
func TestRequestAllocs(t *testing.T) {
	frame := mustRequest(t, 1, &dubbotest.Call{Service: "org.apache.dubbo.UserProvider", Version: "1.0.0", Method: "GetUser", Args: []any{"A001"}})
	var h protocol.Headers
	for _, c := range []Codec{{}, {Attachments: true}} {
		n := testing.AllocsPerRun(200, func() {
			h.Reset()
			if err := c.Request(frame, &h); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("%+v: %.1f allocations per call head", c, n)
		}
	}
	if h.GetString("interface") != "org.apache.dubbo.UserProvider" {
		t.Errorf("attachments not read: %q", h.GetString("interface"))
	}
}

func TestCountTypes(t *testing.T) {
	for desc, want := range map[string]int{"": 0, "I": 1, "Ljava/lang/String;": 1, "Ljava/lang/String;IJ": 3, "[I[[Ljava/util/Map;Z": 3} {
		if n, err := CountTypes([]byte(desc)); err != nil || n != want {
			t.Errorf("CountTypes(%q) = %d, %v; want %d", desc, n, err, want)
		}
	}
	for _, bad := range []string{"[", "Ljava", "Q"} {
		if _, err := CountTypes([]byte(bad)); err == nil {
			t.Errorf("CountTypes(%q) accepted", bad)
		}
	}
}

// FuzzRequest: any body is answered with headers or an error, never a
// panic; strings the codec reads are the strings hessian2 reads.
func FuzzRequest(f *testing.F) {
	for i, c := range []*dubbotest.Call{
		{Service: "a.B", Method: "m"},
		{Service: "org.apache.dubbo.UserProvider", Version: "1.0", Method: "GetUser", Args: []any{"A001", int32(1), []any{"x", int64(2)}},
			Attachments: map[string]string{"group": "g"}},
		{Service: "服务", Method: "m", Args: []any{map[any]any{"k": []any{true}}}},
	} {
		b, _ := dubbotest.EncodeRequest(uint64(i), c)
		f.Add(b[HeaderLen:], true)
	}
	f.Fuzz(func(t *testing.T, body []byte, att bool) {
		frame := make([]byte, HeaderLen, HeaderLen+len(body))
		copy(frame, []byte{0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 1})
		frame = append(frame, body...)
		var h protocol.Headers
		_ = Codec{Attachments: att, Params: att}.Request(frame, &h)
		var head Head
		if _, err := ReadHead(body, &head); err == nil {
			d := hessian.NewDecoder(body)
			for _, want := range [][]byte{head.DubboVersion, head.Service} {
				v, err, crashed := hessianDecode(d)
				if crashed {
					break // hessian2 itself panics on this input (the codec did not): no oracle
				}
				s, ok := v.(string)
				if bytes.IndexByte(want, 0xed) >= 0 {
					break // a lone surrogate: hessian2 reads ahead for its pair
				}
				if err != nil || !ok && v != nil || s != string(want) {
					t.Fatalf("codec read %q, hessian2 %#v, %v", want, v, err)
				}
			}
		}
	})
}

type user struct {
	ID   string
	Age  int32
	Tags []string
}

func (user) JavaClassName() string { return "org.example.User" }

func init() { hessian.RegisterPOJO(&user{}) }

// TestWalkerAgrees: the walker ends each value exactly where hessian2's
// encoder ended it.
func TestWalkerAgrees(t *testing.T) {
	big := make([]byte, 70000)
	for i, v := range []any{
		nil, true, false, int32(0), int32(-16), int32(47), int32(-2048), int32(2047), int32(-262144), int32(262143), int32(1 << 30),
		int64(0), int64(-8), int64(15), int64(-2048), int64(2047), int64(-262144), int64(262143), int64(1 << 30), int64(1 << 40),
		0.0, 1.0, 12.0, 1234.0, 3.25, 1e300, time.UnixMilli(1700000000000), time.Unix(1700000000, 0),
		"", "x", strings.Repeat("s", 5000), "😀", []byte{}, []byte("abc"), make([]byte, 300), big,
		[]any{}, []any{"a", int32(1)}, []string{"a", "b"}, []int32{1, 2, 3}, make([]any, 20),
		map[any]any{}, map[any]any{"k": "v", int32(1): []any{true}}, map[string]any{"a": map[string]any{"b": "c"}},
		&user{ID: "u1", Age: 30, Tags: []string{"x"}}, []any{&user{ID: "a"}, &user{ID: "b"}},
	} {
		e := hessian.NewEncoder()
		if err := e.Encode(v); err != nil {
			t.Fatalf("%d: encode %T: %v", i, v, err)
		}
		e.Encode("end")
		var w walker
		rest, err := w.value(e.Buffer(), 0)
		if err != nil {
			t.Errorf("%d (%T): %v", i, v, err)
			continue
		}
		if s, _, err := readString(rest); err != nil || string(s) != "end" {
			t.Errorf("%d (%T): the walker stopped %d bytes off", i, v, len(rest)-4)
		}
	}
}

// TestHostileSizes: declared sizes that the bytes cannot hold are
// refused before the library would allocate for them.
func TestHostileSizes(t *testing.T) {
	head, _ := dubbotest.EncodeRequest(1, &dubbotest.Call{Service: "a.B", Method: "m", Types: "Ljava/util/List;"})
	call := head[:len(head)]
	// Replace the body after the head with a fixed list of 2^31-1 values.
	var hd Head
	rest, err := ReadHead(call[HeaderLen:], &hd)
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte(nil), call[:len(call)-len(rest)]...)
	for _, evil := range [][]byte{
		{'X', 'I', 0x7f, 0xff, 0xff, 0xff, 'N'},
		{'V', 0x00, 'I', 0x7f, 0xff, 0xff, 0xff},
		{'C', 0x01, 'A', 'I', 0x7f, 0xff, 0xff, 0xff, 0x60},
		{'O', 0x90},
		append(bytes.Repeat([]byte{'W'}, 100), 'Z'),
	} {
		frame := append(append([]byte(nil), body...), evil...)
		var h protocol.Headers
		if err := (Codec{Attachments: true}).Request(frame, &h); err == nil {
			t.Errorf("% x accepted", evil)
		}
	}
}

// hessianDecode is d.Decode, reporting a panic of hessian2's own (its
// string decoder indexes past short input) instead of crashing.
func hessianDecode(d *hessian.Decoder) (v any, err error, crashed bool) {
	defer func() {
		if recover() != nil {
			crashed = true
		}
	}()
	v, err = d.Decode()
	return v, err, false
}
