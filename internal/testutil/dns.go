package testutil

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSRecord is what a test name server answers for one name: A records
// with a TTL; Truncate makes the UDP answer truncated (the client must ask
// again over TCP).
type DNSRecord struct {
	IPs      []string
	TTL      uint32
	Truncate bool
}

// DNSServer is a name server on a loopback port, UDP and TCP, answering A
// queries from its records (names fully qualified, "svc.test."); others
// get NXDOMAIN, AAAA for a known name no records.
type DNSServer struct {
	Addr    string
	Queries atomic.Int32 // questions received, both transports
	TCP     atomic.Int32 // of which over TCP

	mu      sync.Mutex
	records map[string]DNSRecord
}

// Set replaces the answer for name.
func (s *DNSServer) Set(name string, r DNSRecord) {
	s.mu.Lock()
	s.records[strings.ToLower(name)] = r
	s.mu.Unlock()
}

// StartDNS runs a name server until the test ends.
func StartDNS(t testing.TB, records map[string]DNSRecord) *DNSServer {
	t.Helper()
	// The same port for UDP and TCP: a free UDP port's TCP twin may be
	// taken, so try a few.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for try := 0; try < 50; try++ {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &DNSServer{Addr: pc.LocalAddr().String(), records: map[string]DNSRecord{}}
	for k, v := range records {
		s.Set(k, v)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := s.answer(buf[:n], true); out != nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				s.TCP.Add(1)
				if out := s.answer(q, false); out != nil {
					c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
				}
			}()
		}
	}()
	return s
}

func (s *DNSServer) answer(q []byte, udp bool) []byte {
	var m dnsmessage.Message
	if m.Unpack(q) != nil || len(m.Questions) != 1 {
		return nil
	}
	s.Queries.Add(1)
	question := m.Questions[0]
	s.mu.Lock()
	r, ok := s.records[strings.ToLower(question.Name.String())]
	s.mu.Unlock()
	resp := dnsmessage.Message{Header: dnsmessage.Header{ID: m.ID, Response: true, RecursionAvailable: true}, Questions: m.Questions}
	switch {
	case !ok:
		resp.RCode = dnsmessage.RCodeNameError
	case udp && r.Truncate:
		resp.Truncated = true
	case question.Type == dnsmessage.TypeA:
		for _, ip := range r.IPs {
			var a [4]byte
			copy(a[:], net.ParseIP(ip).To4())
			resp.Answers = append(resp.Answers, dnsmessage.Resource{
				Header: dnsmessage.ResourceHeader{Name: question.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: r.TTL},
				Body:   &dnsmessage.AResource{A: a}})
		}
	}
	out, err := resp.Pack()
	if err != nil {
		return nil
	}
	return out
}
