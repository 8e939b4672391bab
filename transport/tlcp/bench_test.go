package tlcp

import (
	"crypto/cipher"
	"crypto/hmac"
	"io"
	"net"
	"testing"

	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"
)

// The record layer against its primitive, in one run (issue 12's
// target: SM4-GCM records at >= 75% of SM4-GCM itself):
//
//	go test -run '^$' -bench 'Primitive|Record' ./transport/tlcp/

const benchRecord = maxPlaintext

func BenchmarkPrimitiveSM4GCM(b *testing.B) {
	a, _ := cipher.NewGCM(newBlock(make([]byte, 16)))
	p := make([]byte, benchRecord)
	out := make([]byte, 0, benchRecord+16)
	nonce := make([]byte, 12)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	for b.Loop() {
		out = a.Seal(out[:0], nonce, p, nonce[:13-1])
	}
}

// BenchmarkPrimitiveSM4CBCEncrypt and BenchmarkPrimitiveHMACSM3 are what
// a CBC record's sealing costs at least: SM4-CBC encryption is serial
// (each block waits for the one before), and the MAC is SM3's.
func BenchmarkPrimitiveSM4CBCEncrypt(b *testing.B) {
	m := cipher.NewCBCEncrypter(newBlock(make([]byte, 16)), make([]byte, 16))
	p := make([]byte, benchRecord)
	b.SetBytes(benchRecord)
	for b.Loop() {
		m.CryptBlocks(p, p)
	}
}

func BenchmarkPrimitiveSM4CBCDecrypt(b *testing.B) {
	m := cipher.NewCBCDecrypter(newBlock(make([]byte, 16)), make([]byte, 16))
	p := make([]byte, benchRecord)
	b.SetBytes(benchRecord)
	for b.Loop() {
		m.CryptBlocks(p, p)
	}
}

func BenchmarkPrimitiveHMACSM3(b *testing.B) {
	h := hmac.New(sm3.New, make([]byte, 32))
	p := make([]byte, benchRecord)
	var sum [32]byte
	b.SetBytes(benchRecord)
	for b.Loop() {
		h.Reset()
		h.Write(p)
		h.Sum(sum[:0])
	}
}

func benchSeal(b *testing.B, id uint16) {
	w, _ := halves(suiteByID(id))
	p := make([]byte, benchRecord)
	out := make([]byte, 0, recordHeaderLen+maxCiphertext)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	for b.Loop() {
		out, _ = w.seal(out[:0], recordApplicationData, p)
	}
}

func benchOpen(b *testing.B, id uint16) {
	s := suiteByID(id)
	p := make([]byte, benchRecord)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	w, r := halves(s)
	recs := make([][]byte, 64)
	buf := make([]byte, recordHeaderLen+maxCiphertext)
	for b.Loop() {
		b.StopTimer()
		for i := range recs {
			recs[i], _ = w.seal(recs[i][:0], recordApplicationData, p)
		}
		b.StartTimer()
		for i := range recs {
			n := copy(buf, recs[i][recordHeaderLen:])
			if _, err := r.open(recordApplicationData, buf[:n]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.SetBytes(benchRecord * int64(len(recs)))
}

func BenchmarkRecordSealSM4GCM(b *testing.B) { benchSeal(b, ECC_SM4_GCM_SM3) }
func BenchmarkRecordSealSM4CBC(b *testing.B) { benchSeal(b, ECC_SM4_CBC_SM3) }
func BenchmarkRecordOpenSM4GCM(b *testing.B) { benchOpen(b, ECC_SM4_GCM_SM3) }
func BenchmarkRecordOpenSM4CBC(b *testing.B) { benchOpen(b, ECC_SM4_CBC_SM3) }

// BenchmarkConnWriteRead: 16 KiB writes through a client and a server
// Conn over loopback TCP, both ends in this process (the record layer's
// copies and syscalls included).
func BenchmarkConnSM4GCM(b *testing.B) { benchConn(b, ECC_SM4_GCM_SM3) }
func BenchmarkConnSM4CBC(b *testing.B) { benchConn(b, ECC_SM4_CBC_SM3) }

func benchConn(b *testing.B, id uint16) {
	srv := fuzzServer()
	srv.ClientAuth, srv.Sessions = NoClientCert, nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		s := Server(nc, srv)
		io.Copy(io.Discard, s)
		s.Close()
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c := Client(nc, &Config{InsecureSkipVerify: true, Suites: []uint16{id}})
	defer c.Close()
	if err := c.Handshake(); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 64<<10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandshake: full handshakes, client and server in this
// process over loopback (the CPU of both sides per handshake).
func BenchmarkHandshakeECCGCM(b *testing.B)   { benchHandshake(b, ECC_SM4_GCM_SM3, false) }
func BenchmarkHandshakeECDHEGCM(b *testing.B) { benchHandshake(b, ECDHE_SM4_GCM_SM3, false) }
func BenchmarkHandshakeResumed(b *testing.B)  { benchHandshake(b, ECC_SM4_GCM_SM3, true) }

func benchHandshake(b *testing.B, id uint16, resume bool) {
	srv := fuzzServer()
	if !resume {
		srv.Sessions = nil
	}
	ccfg := &Config{InsecureSkipVerify: true, Suites: []uint16{id}}
	if suiteByID(id).ecdhe {
		// The client presents the server's own (self-signed) pair.
		ccfg.SignCert, ccfg.EncCert = srv.SignCert, srv.EncCert
		srv.ClientCAs = smx509.NewCertPool()
		srv.ClientCAs.AddCert(srv.SignCert.Leaf)
		srv.ClientCAs.AddCert(srv.EncCert.Leaf)
	}
	if resume {
		ccfg.Sessions = NewSessionCache(1, 1<<40)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				s := Server(nc, srv)
				s.Handshake()
				s.Close()
			}()
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c := Client(nc, ccfg)
		if err := c.Handshake(); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
