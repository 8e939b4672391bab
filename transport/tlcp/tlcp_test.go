package tlcp_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"github.com/straitproxy/strait/transport/tlcp"
	"github.com/straitproxy/strait/transport/tlcp/tlcptest"
)

type pki struct {
	ca                   *tlcptest.CA
	sign, enc            *tlcptest.Issued
	clientSign, clientEn *tlcptest.Issued
}

func newPKI() *pki {
	ca := tlcptest.NewCA("test CA")
	return &pki{ca: ca,
		sign: ca.Issue("server sign", false, "tlcp.test"), enc: ca.Issue("server enc", true, "tlcp.test"),
		clientSign: ca.Issue("client sign", false, "spiffe://test/client"), clientEn: ca.Issue("client enc", true, "spiffe://test/client")}
}

// pair runs a handshake between a client and a server over loopback TCP
// and echoes one message; it returns both sides' errors.
func pair(t *testing.T, scfg, ccfg *tlcp.Config) (sc, cc *tlcp.Conn, serr, cerr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return pairOn(t, ln, scfg, ccfg)
}

// pairOn is pair on a given listener.
func pairOn(t *testing.T, ln net.Listener, scfg, ccfg *tlcp.Config) (sc, cc *tlcp.Conn, serr, cerr error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		sc = tlcp.Server(nc, scfg)
		if err := sc.Handshake(); err != nil {
			nc.Close()
			done <- err
			return
		}
		// Echo until EOF.
		_, err = io.Copy(sc, sc)
		sc.CloseWrite()
		done <- err
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	cc = tlcp.Client(nc, ccfg)
	t.Cleanup(func() { cc.Close() })
	if cerr = cc.Handshake(); cerr == nil {
		msg := bytes.Repeat([]byte("tlcp "), 10000) // several records
		go func() { cc.Write(msg); cc.CloseWrite() }()
		got, err := io.ReadAll(cc)
		if err != nil {
			cerr = err
		} else if !bytes.Equal(got, msg) {
			cerr = errors.New("echo differs")
		}
	} else {
		nc.Close()
	}
	serr = <-done
	return sc, cc, serr, cerr
}

func (p *pki) server() *tlcp.Config {
	return &tlcp.Config{SignCert: p.sign.Cert, EncCert: p.enc.Cert}
}

func (p *pki) client() *tlcp.Config {
	return &tlcp.Config{RootCAs: p.ca.Pool(), ServerName: "tlcp.test"}
}

// TestSuites: our client and server agree on each of the four suites,
// ECDHE ones with client certificates (which they need).
func TestSuites(t *testing.T) {
	p := newPKI()
	for _, id := range tlcp.DefaultSuites {
		t.Run(tlcp.SuiteName(id), func(t *testing.T) {
			s, c := p.server(), p.client()
			c.Suites = []uint16{id}
			s.ClientAuth, s.ClientCAs = tlcp.RequireAndVerifyClientCert, p.ca.Pool()
			c.SignCert, c.EncCert = p.clientSign.Cert, p.clientEn.Cert
			sc, cc, serr, cerr := pair(t, s, c)
			if serr != nil || cerr != nil {
				t.Fatalf("server %v, client %v", serr, cerr)
			}
			cs := sc.ConnectionState()
			if cs.CipherSuite != id || cs.Version != tlcp.VersionTLCP || cs.ServerName != "tlcp.test" {
				t.Fatalf("state %+v", cs)
			}
			if len(cs.PeerCertificates) != 2 || cs.PeerCertificates[0].URIs[0].String() != "spiffe://test/client" {
				t.Fatalf("server sees client certificates %v", cs.PeerCertificates)
			}
			if got := cc.ConnectionState().PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "tlcp.test" {
				t.Fatalf("client sees %v", got)
			}
		})
	}
}

// TestECCWithoutClientAuth: the ECC suites need no client certificate;
// a server that asks none never picks ECDHE.
func TestECCWithoutClientAuth(t *testing.T) {
	p := newPKI()
	c := p.client()
	c.Suites = []uint16{tlcp.ECDHE_SM4_GCM_SM3, tlcp.ECC_SM4_CBC_SM3}
	sc, _, serr, cerr := pair(t, p.server(), c)
	if serr != nil || cerr != nil {
		t.Fatalf("server %v, client %v", serr, cerr)
	}
	if got := sc.ConnectionState().CipherSuite; got != tlcp.ECC_SM4_CBC_SM3 {
		t.Fatalf("suite %s", tlcp.SuiteName(got))
	}
	c.Suites = []uint16{tlcp.ECDHE_SM4_GCM_SM3}
	if _, _, serr, cerr = pair(t, p.server(), c); serr == nil || cerr == nil {
		t.Fatalf("an ECDHE-only client met a server without client auth: %v %v", serr, cerr)
	}
}

// TestClientAuth: required certificates are enforced and verified.
func TestClientAuth(t *testing.T) {
	p := newPKI()
	s := p.server()
	s.ClientAuth, s.ClientCAs = tlcp.RequireAndVerifyClientCert, p.ca.Pool()
	_, _, serr, cerr := pair(t, s, p.client())
	if serr == nil || !strings.Contains(serr.Error(), "no certificate") || cerr == nil {
		t.Fatalf("no client certificate: server %v, client %v", serr, cerr)
	}
	// A certificate from another CA.
	other := tlcptest.NewCA("other")
	c := p.client()
	c.SignCert = other.Issue("stranger", false).Cert
	if _, _, serr, _ = pair(t, s, c); serr == nil || !strings.Contains(serr.Error(), "unknown authority") {
		t.Fatalf("a stranger's certificate: %v", serr)
	}
	// One signing certificate is enough for ECC suites (tjfoc sends one).
	c = p.client()
	c.SignCert = p.clientSign.Cert
	sc, _, serr, cerr := pair(t, s, c)
	if serr != nil || cerr != nil {
		t.Fatalf("server %v, client %v", serr, cerr)
	}
	if n := len(sc.PeerCertificates()); n != 1 {
		t.Fatalf("%d peer certificates", n)
	}
}

// TestServerVerification: the client checks the server's chain and name.
func TestServerVerification(t *testing.T) {
	p := newPKI()
	c := p.client()
	c.ServerName = "other.test"
	if _, _, _, cerr := pair(t, p.server(), c); cerr == nil || !strings.Contains(cerr.Error(), "other.test") {
		t.Fatalf("wrong name: %v", cerr)
	}
	c = p.client()
	c.RootCAs = tlcptest.NewCA("other").Pool()
	if _, _, _, cerr := pair(t, p.server(), c); cerr == nil || !strings.Contains(cerr.Error(), "unknown authority") {
		t.Fatalf("wrong CA: %v", cerr)
	}
	// A server whose encryption certificate is a stranger's.
	s := p.server()
	s.EncCert = tlcptest.NewCA("other").Issue("x", true, "tlcp.test").Cert
	if _, _, _, cerr := pair(t, s, p.client()); cerr == nil || !strings.Contains(cerr.Error(), "certificate 1") {
		t.Fatalf("stranger's encryption certificate: %v", cerr)
	}
	c = p.client()
	c.VerifyPeer = func(certs []*smx509.Certificate) error { return errors.New("refused by policy") }
	if _, _, _, cerr := pair(t, p.server(), c); cerr == nil || !strings.Contains(cerr.Error(), "policy") {
		t.Fatalf("VerifyPeer: %v", cerr)
	}
}

// TestResumption: a second connection resumes by session ID, with the
// same suite and peer identity; a server that forgot starts over.
func TestResumption(t *testing.T) {
	p := newPKI()
	s, c := p.server(), p.client()
	s.Sessions = tlcp.NewSessionCache(10, time.Minute)
	c.Sessions = tlcp.NewSessionCache(10, time.Minute)
	s.ClientAuth, s.ClientCAs = tlcp.VerifyClientCertIfGiven, p.ca.Pool()
	c.SignCert = p.clientSign.Cert
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i, want := range []bool{false, true, true} {
		sc, cc, serr, cerr := pairOn(t, ln, s, c)
		if serr != nil || cerr != nil {
			t.Fatalf("%d: server %v, client %v", i, serr, cerr)
		}
		if sc.ConnectionState().DidResume != want || cc.ConnectionState().DidResume != want {
			t.Fatalf("%d: resumed %v/%v, want %v", i, sc.ConnectionState().DidResume, cc.ConnectionState().DidResume, want)
		}
		if len(sc.PeerCertificates()) != 1 {
			t.Fatalf("%d: the resumed session lost the client's identity", i)
		}
	}
	s.Sessions = tlcp.NewSessionCache(10, time.Minute)
	sc, _, serr, cerr := pairOn(t, ln, s, c)
	if serr != nil || cerr != nil || sc.ConnectionState().DidResume {
		t.Fatalf("after the server forgot: %v %v resumed %v", serr, cerr, sc.ConnectionState().DidResume)
	}
}

// TestNotTLCP: a TLS 1.2 ClientHello is refused with a protocol_version
// alert, and garbage fails without a panic.
func TestNotTLCP(t *testing.T) {
	p := newPKI()
	for name, in := range map[string][]byte{
		"tls12":   {22, 3, 3, 0, 5, 1, 0, 0, 1, 0},
		"garbage": []byte("GET / HTTP/1.1\r\n\r\n"),
		"huge":    {22, 1, 1, 0xff, 0xff},
	} {
		a, b := net.Pipe()
		go func() { b.Write(in); b.Close() }()
		go io.Copy(io.Discard, b)
		err := tlcp.Server(a, p.server()).Handshake()
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		a.Close()
	}
}

// TestCertificateRoles: each certificate serves only its role. A server
// whose signing certificate is its encryption one, whose encryption
// certificate may only sign, or whose two certificates share a key, is
// refused; so is a client signing with an encryption certificate.
func TestCertificateRoles(t *testing.T) {
	p := newPKI()
	s := p.server()
	s.SignCert = p.enc.Cert // signs with the (escrowed) encryption key
	if _, _, _, cerr := pair(t, s, p.client()); cerr == nil || !strings.Contains(cerr.Error(), "cannot serve as the signing") {
		t.Fatalf("encryption certificate as signing: %v", cerr)
	}
	s = p.server()
	s.EncCert = p.ca.Issue("sign only", false, "tlcp.test").Cert
	if _, _, _, cerr := pair(t, s, p.client()); cerr == nil || !strings.Contains(cerr.Error(), "cannot serve as the encryption") {
		t.Fatalf("signing-only certificate as encryption: %v", cerr)
	}
	key, _ := sm2.GenerateKey(rand.Reader)
	s = p.server()
	s.SignCert = p.ca.IssueWith("same key sign", key, smx509.KeyUsageDigitalSignature, "tlcp.test").Cert
	s.EncCert = p.ca.IssueWith("same key enc", key, smx509.KeyUsageKeyEncipherment|smx509.KeyUsageKeyAgreement, "tlcp.test").Cert
	if _, _, _, cerr := pair(t, s, p.client()); cerr == nil || !strings.Contains(cerr.Error(), "same key") {
		t.Fatalf("one key for both roles: %v", cerr)
	}
	s = p.server()
	s.ClientAuth, s.ClientCAs = tlcp.RequireAndVerifyClientCert, p.ca.Pool()
	c := p.client()
	c.SignCert = p.clientEn.Cert
	if _, _, serr, _ := pair(t, s, c); serr == nil || !strings.Contains(serr.Error(), "cannot serve as the signing") {
		t.Fatalf("client signing with its encryption certificate: %v", serr)
	}
}

// TestIntermediates: a client certificate from an intermediate CA, sent
// with its chain and no encryption certificate, verifies against the
// root (the intermediate is not taken for an encryption certificate); a
// server whose encryption certificate comes from another intermediate
// (a key-management centre's) sends both chains.
func TestIntermediates(t *testing.T) {
	p := newPKI()
	signCA, kmcCA, clientCA := p.ca.NewIntermediate("sign CA"), p.ca.NewIntermediate("KMC CA"), p.ca.NewIntermediate("client CA")
	s := &tlcp.Config{SignCert: signCA.Issue("s", false, "tlcp.test").Cert, EncCert: kmcCA.Issue("e", true, "tlcp.test").Cert,
		ClientAuth: tlcp.RequireAndVerifyClientCert, ClientCAs: p.ca.Pool()}
	c := p.client()
	c.SignCert = clientCA.Issue("client", false, "spiffe://test/intermediate").Cert
	sc, _, serr, cerr := pair(t, s, c)
	if serr != nil || cerr != nil {
		t.Fatalf("server %v, client %v", serr, cerr)
	}
	if peers := sc.PeerCertificates(); len(peers) != 1 || peers[0].URIs[0].String() != "spiffe://test/intermediate" {
		t.Fatalf("server sees %d certificates", len(peers))
	}
}

// TestClientOffersWhatItCan: a client without certificates does not
// offer the ECDHE suites, so a server that prefers them but asks
// certificates only optionally settles on ECC.
func TestClientOffersWhatItCan(t *testing.T) {
	p := newPKI()
	s := p.server()
	s.Suites = []uint16{tlcp.ECDHE_SM4_GCM_SM3, tlcp.ECC_SM4_GCM_SM3}
	s.ClientAuth, s.ClientCAs = tlcp.VerifyClientCertIfGiven, p.ca.Pool()
	sc, _, serr, cerr := pair(t, s, p.client())
	if serr != nil || cerr != nil || sc.ConnectionState().CipherSuite != tlcp.ECC_SM4_GCM_SM3 {
		t.Fatalf("server %v, client %v", serr, cerr)
	}
	c := p.client()
	c.Suites = []uint16{tlcp.ECDHE_SM4_CBC_SM3}
	if _, _, _, cerr := pair(t, s, c); cerr == nil || !strings.Contains(cerr.Error(), "no suite to offer") {
		t.Fatalf("ECDHE only, without certificates: %v", cerr)
	}
}
