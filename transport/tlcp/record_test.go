package tlcp

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func halves(s *suite) (w, r *halfConn) {
	mac, key, iv := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16), bytes.Repeat([]byte{3}, 16)
	return newHalf(s, mac, key, iv), newHalf(s, mac, key, iv)
}

// TestRecordRoundTrip: sealed records of every size open to their
// plaintext, in sequence; a flipped bit, a replayed record and a wrong
// type fail.
func TestRecordRoundTrip(t *testing.T) {
	for _, s := range suites {
		w, r := halves(s)
		for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 1000, maxPlaintext} {
			p := bytes.Repeat([]byte{byte(n)}, n)
			rec, err := w.seal(nil, recordApplicationData, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(rec)-recordHeaderLen != w.sealedLen(n) || len(rec)-recordHeaderLen > maxCiphertext {
				t.Fatalf("%s %d: record length %d", s.name, n, len(rec))
			}
			typ, l, err := recordLen(rec)
			if err != nil || typ != recordApplicationData || l != len(rec)-recordHeaderLen {
				t.Fatalf("%s %d: header %d %d %v", s.name, n, typ, l, err)
			}
			got, err := r.open(recordApplicationData, append([]byte(nil), rec[recordHeaderLen:]...))
			if err != nil || !bytes.Equal(got, p) {
				t.Fatalf("%s %d: open %v", s.name, n, err)
			}
			// Tampered: every byte position of a short record.
			if n == 33 {
				for i := recordHeaderLen; i < len(rec); i++ {
					w2, r2 := halves(s)
					rec2, _ := w2.seal(nil, recordApplicationData, p)
					rec2[i] ^= 0x40
					if _, err := r2.open(recordApplicationData, rec2[recordHeaderLen:]); err != errBadRecordMAC {
						t.Fatalf("%s: bit flipped at %d opened: %v", s.name, i, err)
					}
				}
			}
		}
		// Replay: the sequence number moved on.
		rec, _ := w.seal(nil, recordApplicationData, []byte("x"))
		r.open(recordApplicationData, append([]byte(nil), rec[recordHeaderLen:]...))
		if _, err := r.open(recordApplicationData, rec[recordHeaderLen:]); err == nil {
			t.Fatalf("%s: a replayed record opened", s.name)
		}
		w, r = halves(s)
		rec, _ = w.seal(nil, recordApplicationData, []byte("x"))
		if _, err := r.open(recordHandshake, rec[recordHeaderLen:]); err == nil {
			t.Fatalf("%s: a record opened as another type", s.name)
		}
	}
}

// TestCBCPadding: cbcPadding accepts well-formed paddings only.
func TestCBCPadding(t *testing.T) {
	body := make([]byte, 64)
	for pad := 0; pad < 31; pad++ {
		for i := 0; i <= pad; i++ {
			body[63-i] = byte(pad)
		}
		if n, good := cbcPadding(body); good != 1 || n != pad+1 {
			t.Fatalf("pad %d: %d %d", pad, n, good)
		}
		body[63-(pad+1)/2] ^= 1
		if pad > 0 {
			if _, good := cbcPadding(body); good != 0 {
				t.Fatalf("pad %d: a bad padding passed", pad)
			}
		}
		body[63-(pad+1)/2] ^= 1
	}
	body[63] = 40 // would eat into the MAC
	if _, good := cbcPadding(body); good != 0 {
		t.Fatal("padding over the MAC passed")
	}
}

// TestPRF: the PRF's length and determinism, and the key block's cut.
func TestPRF(t *testing.T) {
	a, b := make([]byte, 100), make([]byte, 100)
	prf(a, []byte("secret"), "label", []byte("seed"))
	prf(b[:33], []byte("secret"), "label", []byte("seed"))
	if !bytes.Equal(a[:33], b[:33]) || bytes.Equal(a[:32], a[32:64]) {
		t.Fatal("PRF output is not a stable stream")
	}
	cm, sm, ck, sk, ci, si := keys(suiteByID(ECC_SM4_CBC_SM3), a[:48], a[:32], a[32:64])
	if len(cm) != 32 || len(sm) != 32 || len(ck) != 16 || len(sk) != 16 || len(ci) != 16 || len(si) != 16 {
		t.Fatal("CBC key block cut")
	}
	cm, _, ck, _, ci, _ = keys(suiteByID(ECC_SM4_GCM_SM3), a[:48], a[:32], a[32:64])
	if len(cm) != 0 || len(ck) != 16 || len(ci) != 4 {
		t.Fatal("GCM key block cut")
	}
}

// FuzzServerHandshake feeds a server arbitrary client bytes: it must
// fail cleanly, never panic or hang.
func FuzzServerHandshake(f *testing.F) {
	f.Add([]byte{22, 1, 1, 0, 4, 1, 0, 0, 0})
	ch := (&clientHello{vers: VersionTLCP, random: make([]byte, 32), suites: DefaultSuites, serverName: "a"}).marshal()
	f.Add(append([]byte{22, 1, 1, 0, byte(len(ch))}, ch...))
	f.Add(append(append([]byte{22, 1, 1, 0, byte(len(ch))}, ch...), 22, 1, 1, 0, 4, 16, 0, 0, 0))
	f.Add([]byte{21, 1, 1, 0, 2, 2, 40})
	cfg := fuzzServer()
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go func() { b.Write(in); b.Close() }()
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		a.SetDeadline(time.Now().Add(2 * time.Second))
		if err := Server(a, cfg).Handshake(); err == nil {
			t.Fatal("a handshake completed on fuzz input")
		}
	})
}

// FuzzRecordOpen opens arbitrary payloads under each suite: an error,
// never a panic; a success only for a record this side sealed.
func FuzzRecordOpen(f *testing.F) {
	f.Add(byte(0), []byte{})
	f.Add(byte(1), make([]byte, 64))
	f.Add(byte(2), make([]byte, 24))
	f.Fuzz(func(t *testing.T, which byte, payload []byte) {
		_, r := halves(suites[int(which)%len(suites)])
		if _, err := r.open(recordApplicationData, payload); err == nil {
			t.Fatalf("arbitrary payload of %d bytes opened", len(payload))
		}
	})
}

// FuzzClientHandshake feeds a client arbitrary server bytes.
func FuzzClientHandshake(f *testing.F) {
	sh := (&serverHello{vers: VersionTLCP, random: make([]byte, 32), suite: ECC_SM4_GCM_SM3}).marshal()
	f.Add(append([]byte{22, 1, 1, 0, byte(len(sh))}, sh...))
	cert := (&certificateMsg{certs: [][]byte{{1}, {2}}}).marshal()
	f.Add(append(append([]byte{22, 1, 1, 0, byte(len(sh) + len(cert))}, sh...), cert...))
	f.Add([]byte{21, 1, 1, 0, 2, 2, 40})
	srv := fuzzServer()
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go func() { b.Write(in); b.Close() }()
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		a.SetDeadline(time.Now().Add(2 * time.Second))
		cfg := &Config{InsecureSkipVerify: true, SignCert: srv.SignCert, EncCert: srv.EncCert}
		if err := Client(a, cfg).Handshake(); err == nil {
			t.Fatal("a handshake completed on fuzz input")
		}
	})
}

// handshaken returns a client and a server Conn after a handshake over
// loopback TCP.
func handshaken(t *testing.T) (cc, sc *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			sc = Server(nc, fuzzServer())
			err = sc.Handshake()
		}
		done <- err
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc = Client(nc, &Config{InsecureSkipVerify: true})
	if err := cc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.conn.Close(); sc.conn.Close() })
	return cc, sc
}

// TestFINEndsStream: a TCP FIN between records reads as the end of the
// stream (as crypto/tls has it), after the data before it; inside a
// record it is an error.
func TestFINEndsStream(t *testing.T) {
	cc, sc := handshaken(t)
	cc.Write([]byte("last words"))
	cc.conn.(*net.TCPConn).CloseWrite() // no close_notify
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(sc)
	if err != nil || string(got) != "last words" {
		t.Fatalf("%q %v", got, err)
	}
	cc, sc = handshaken(t)
	cc.outMu.Lock()
	rec, _ := cc.out.seal(nil, recordApplicationData, []byte("cut short"))
	cc.outMu.Unlock()
	cc.conn.Write(rec[:len(rec)-3])
	cc.conn.(*net.TCPConn).CloseWrite()
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(sc); err == nil || !strings.Contains(err.Error(), "mid-record") {
		t.Fatalf("a record cut by FIN: %v", err)
	}
}

// TestUselessRecords: a peer sending only empty records is cut off
// after maxUseless of them; a few are fine.
func TestUselessRecords(t *testing.T) {
	cc, sc := handshaken(t)
	send := func(n int, p string) {
		cc.outMu.Lock()
		defer cc.outMu.Unlock()
		var buf []byte
		for i := 0; i < n; i++ {
			buf, _ = cc.out.seal(buf, recordApplicationData, nil)
		}
		if p != "" {
			buf, _ = cc.out.seal(buf, recordApplicationData, []byte(p))
		}
		cc.conn.Write(buf)
	}
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	send(maxUseless, "ok")
	b := make([]byte, 10)
	if n, err := sc.Read(b); err != nil || string(b[:n]) != "ok" {
		t.Fatalf("%d empty records then data: %q %v", maxUseless, b[:n], err)
	}
	send(maxUseless+1, "never")
	if _, err := sc.Read(b); err == nil || !strings.Contains(err.Error(), "empty records") {
		t.Fatalf("too many empty records: %v", err)
	}
}
