package network_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/straitproxy/strait/network"
	_ "github.com/straitproxy/strait/network/epoll"
	"golang.org/x/sys/unix"
)

// holder consumes nothing while hold is set, and records what it saw.
type holder struct {
	mu     sync.Mutex
	hold   bool
	last   []byte
	got    bytes.Buffer
	closed chan error
}

func (h *holder) OnRead(d []byte) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = append(h.last[:0], d...)
	if h.hold {
		return 0
	}
	h.got.Write(d)
	return len(d)
}
func (h *holder) OnEOF()            {}
func (h *holder) OnClose(err error) { h.closed <- err }

func (h *holder) snapshot() (last, got string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.last), h.got.String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestDetach, in both I/O models: a Detach hands over the bytes read and
// not consumed; Abort serves on (they are offered again); Commit lets
// the socket go without a FIN, so a duplicate elsewhere reads on with the
// bytes the kernel held, and the handler hears ErrMigrated.
func TestDetach(t *testing.T) {
	for _, name := range []string{"netpoll", "epoll"} {
		t.Run(name, func(t *testing.T) {
			m, err := network.Model(name)
			if err != nil {
				t.Fatal(err)
			}
			h := &holder{hold: true, closed: make(chan error, 1)}
			conns := make(chan *network.Conn, 1)
			acc, err := m.Listen(context.Background(), "127.0.0.1:0", func(c *network.Conn) {
				c.SetHandler(h)
				m.Start(c)
				conns <- c
			})
			if err != nil {
				t.Fatal(err)
			}
			defer acc.Close()
			cl, err := net.Dial("tcp", acc.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			c := <-conns

			io.WriteString(cl, "hello")
			eventually(t, "hello read and held", func() bool { last, _ := h.snapshot(); return last == "hello" })
			d, err := c.Detach(time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(d.Pending) != "hello" {
				t.Fatalf("pending %q", d.Pending)
			}
			h.mu.Lock()
			h.hold = false
			h.mu.Unlock()
			d.Abort()
			eventually(t, "hello offered again after Abort", func() bool { _, got := h.snapshot(); return got == "hello" })
			io.WriteString(cl, " world")
			eventually(t, "reading goes on", func() bool { _, got := h.snapshot(); return got == "hello world" })

			d, err = c.Detach(time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Pending) != 0 {
				t.Fatalf("pending %q", d.Pending)
			}
			// "The next process": a duplicate of the handed-over socket.
			fd, err := unix.Dup(int(d.File.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			next, err := net.FileConn(os.NewFile(uintptr(fd), "next"))
			if err != nil {
				t.Fatal(err)
			}
			defer next.Close()
			io.WriteString(cl, "unread") // held by the kernel: the reader is held
			d.Commit()
			select {
			case err := <-h.closed:
				if !errors.Is(err, network.ErrMigrated) {
					t.Fatalf("OnClose(%v)", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("no OnClose after Commit")
			}
			if _, got := h.snapshot(); got != "hello world" {
				t.Fatalf("the old side read %q", got)
			}
			buf := make([]byte, 6)
			next.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.ReadFull(next, buf); err != nil || string(buf) != "unread" {
				t.Fatalf("the next side read %q, %v", buf, err)
			}
			// Both ways alive: no FIN, no reset went out.
			io.WriteString(next, "pong")
			cl.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.ReadFull(cl, buf[:4]); err != nil || string(buf[:4]) != "pong" {
				t.Fatalf("the client read %q, %v", buf[:4], err)
			}
		})
	}
}
