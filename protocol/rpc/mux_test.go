package rpc

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/straitproxy/strait/protocol"
)

// toy is a framed protocol for the engine's own tests: a 12-byte header
// (kind, status, 2 unused, 4-byte id, 4-byte body length), then the body.
type toy struct{}

func (toy) Name() string                            { return "toy" }
func (toy) Match([]byte) (bool, bool)               { return true, false }
func (toy) HeaderLen() int                          { return 12 }
func (toy) SetID(h []byte, id uint64)               { binary.BigEndian.PutUint32(h[4:], uint32(id)) }
func (toy) Request([]byte, *protocol.Headers) error { return nil }
func (toy) Parse(h []byte) (Frame, error) {
	if h[0] > byte(Other) {
		return Frame{}, errors.New("not toy")
	}
	return Frame{Kind: Kind(h[0]), Status: Status(h[1]), ID: uint64(binary.BigEndian.Uint32(h[4:])),
		Len: 12 + int(binary.BigEndian.Uint32(h[8:]))}, nil
}
func (toy) AppendError(dst, req []byte, st Status, msg string) []byte {
	return append(toyFrame(Reply, binary.BigEndian.Uint32(req[4:]), msg), dst...)
}
func (toy) AppendPing(dst []byte, id uint64) []byte {
	return append(dst, toyFrame(Ping, uint32(id), "")...)
}
func (toy) AppendPong(dst, req []byte) []byte {
	return append(dst, toyFrame(Pong, binary.BigEndian.Uint32(req[4:]), "")...)
}

func toyFrame(k Kind, id uint32, body string) []byte {
	b := make([]byte, 12, 12+len(body))
	b[0] = byte(k)
	binary.BigEndian.PutUint32(b[4:], id)
	binary.BigEndian.PutUint32(b[8:], uint32(len(body)))
	return append(b, body...)
}

// TestMuxSlotsAndClosedConnection: a call whose frame is malformed gives
// its slot back, and a call sent on a connection that closed under it
// reports the reset, never an answer.
func TestMuxSlotsAndClosedConnection(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() { // the upstream reads and never answers
		buf := make([]byte, 1024)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	}()
	m := newMux(toy{}, Options{MaxStreams: 2}, a, protocol.MuxOptions{Heartbeat: -1})
	for range 5 { // more than the limit: a leaked slot would fill it
		st, err := m.NewStream()
		if err != nil {
			t.Fatalf("slot: %v (capacity %d)", err, m.Capacity())
		}
		if err := st.WriteData([]byte("not a frame"), true); err == nil {
			t.Fatal("a malformed frame was sent")
		}
		st.Close()
	}
	if n := m.Active(); n != 0 {
		t.Fatalf("%d calls active after malformed frames", n)
	}

	st, err := m.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	m.fail(errors.New("upstream gone"))
	if err := st.WriteData(toyFrame(Call, 7, "hello"), true); err == nil {
		t.Error("a call on a closed connection was sent")
	}
	var h protocol.Headers
	if err := st.ReadHeaders(&h); err == nil {
		t.Errorf("a call on a closed connection read an answer: status %d", h.StatusCode())
	}
	st.Close()

	// A client that leaves before its call is sent: the call is not sent.
	c, d := net.Pipe()
	defer d.Close()
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 1024)
		n, _ := d.Read(buf)
		got <- n
	}()
	m2 := newMux(toy{}, Options{}, c, protocol.MuxOptions{Heartbeat: -1})
	st2, _ := m2.NewStream()
	st2.(protocol.Cancelable).Cancel(protocol.ErrDownstreamReset)
	if err := st2.WriteData(toyFrame(Call, 1, "x"), true); err == nil {
		t.Error("a cancelled call was sent")
	}
	select {
	case n := <-got:
		t.Errorf("the upstream received %d bytes of a cancelled call", n)
	case <-time.After(50 * time.Millisecond):
	}
	st2.Close()
	m2.Close()
}
