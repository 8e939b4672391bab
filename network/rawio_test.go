package network

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns a wrapped client side and the plain server side of a
// loopback connection.
func tcpPair(t *testing.T) (*TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s == nil {
		t.Fatal("accept failed")
	}
	w, ok := NewTCPConn(c).(*TCPConn)
	if !ok {
		t.Fatal("NewTCPConn did not wrap a *net.TCPConn")
	}
	t.Cleanup(func() { w.Close(); s.Close() })
	return w, s.(*net.TCPConn)
}

func TestTCPConnReadWrite(t *testing.T) {
	c, s := tcpPair(t)
	// A write bigger than the socket buffers: the writer meets EAGAIN
	// and parks until the slow reader makes room.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	slowRead(t, s, big, func() (int64, error) {
		n, err := c.Write(big)
		return int64(n), err
	})

	// Writev: many buffers, more than one call's worth and more than the
	// socket buffers hold, with empty ones among them.
	var bufs [][]byte
	var want []byte
	for i := range 40 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, (i%7)*37<<10)
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	var _ vectorWriter = c // network.Conn gathers through it
	slowRead(t, s, want, func() (int64, error) { return c.Writev(bufs) })

	// The reader parks until data comes, then reads it; end of file is
	// io.EOF.
	buf := make([]byte, 32<<10)
	go func() {
		time.Sleep(20 * time.Millisecond)
		s.Write([]byte("hello"))
		s.CloseWrite()
	}()
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("at end: %d, %v; want 0, EOF", n, err)
	}
}

// slowRead runs write on a goroutine while s reads slowly, and checks
// that s got want and that write wrote it all.
func slowRead(t *testing.T, s net.Conn, want []byte, write func() (int64, error)) {
	t.Helper()
	werr := make(chan error, 1)
	go func() {
		n, err := write()
		if err == nil && n != int64(len(want)) {
			err = io.ErrShortWrite
		}
		werr <- err
	}()
	got := make([]byte, 0, len(want))
	buf := make([]byte, 32<<10)
	for len(got) < len(want) {
		time.Sleep(time.Millisecond)
		n, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes read differ from those written")
	}
}

func TestTCPConnErrors(t *testing.T) {
	c, s := tcpPair(t)
	buf := make([]byte, 16)

	// A deadline: a timeout net.Error, as net.Conn's.
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past the deadline: %v, want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %#v, want a *net.OpError for read", err)
	}
	c.SetReadDeadline(time.Time{})

	// A reset by the peer: ECONNRESET inside a *net.OpError.
	s.SetLinger(0)
	s.Close()
	time.Sleep(20 * time.Millisecond)
	_, err = c.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) {
		t.Fatalf("after a reset: %v, want ECONNRESET in a *net.OpError", err)
	}

	// Closed locally: net.ErrClosed.
	c.Close()
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
}

func TestTCPConnNoAllocs(t *testing.T) {
	c, s := tcpPair(t)
	msg := []byte("ping")
	buf := make([]byte, 16)
	if n := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per exchange, want 0", n)
	}
}

// TestTCPConnReadLimit: with a ReadLimit, one Read takes at most that
// many bytes, whatever the buffer and however much is waiting.
func TestTCPConnReadLimit(t *testing.T) {
	c, s := tcpPair(t)
	c.ReadLimit = 100
	if _, err := s.Write(bytes.Repeat([]byte("x"), 1000)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	got := 0
	for got < 1000 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n > 100 {
			t.Fatalf("read %d bytes with a limit of 100", n)
		}
		got += n
	}
}
