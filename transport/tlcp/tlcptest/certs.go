// Package tlcptest makes SM2 certificates for TLCP tests: a CA, and
// signing and encryption certificates issued by it.
package tlcptest

import (
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"github.com/straitproxy/strait/transport/tlcp"
)

// CA is a test certificate authority with an SM2 key.
type CA struct {
	Cert *smx509.Certificate
	Key  *sm2.PrivateKey
	// PEM is the CA certificate in PEM.
	PEM []byte
	// chain is, for an intermediate CA, its certificate and those above it
	// up to the root (excluded), in PEM: issued chains carry it.
	chain []byte
}

// NewIntermediate makes an intermediate CA issued by ca.
func (ca *CA) NewIntermediate(name string) *CA {
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &smx509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkixName(name),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(Validity),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign,
	}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		panic(err)
	}
	cert, err := smx509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &CA{Cert: cert, Key: key, PEM: p, chain: append(append([]byte(nil), p...), ca.chain...)}
}

var serial atomic.Int64

// Validity is how long the certificates made from now on are valid.
var Validity = 24 * time.Hour

// NewCA makes a self-signed SM2 CA.
func NewCA(name string) *CA {
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &smx509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkixName(name),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(Validity),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign,
	}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	cert, err := smx509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Pool is a pool holding the CA.
func (ca *CA) Pool() *smx509.CertPool {
	p := smx509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issued is an issued certificate in PEM and in tlcp's form.
type Issued struct {
	CertPEM, KeyPEM []byte
	Cert            *tlcp.Certificate
}

// Issue makes a certificate for names (DNS names, IPs, or URIs with a
// scheme), for signing (digitalSignature) or encryption
// (keyEncipherment, keyAgreement), for servers and clients.
func (ca *CA) Issue(cn string, encryption bool, names ...string) *Issued {
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	ku := smx509.KeyUsageDigitalSignature
	if encryption {
		ku = smx509.KeyUsageKeyEncipherment | smx509.KeyUsageDataEncipherment | smx509.KeyUsageKeyAgreement
	}
	return ca.IssueWith(cn, key, ku, names...)
}

// IssueWith makes a certificate for key with key usage ku (chains from an
// intermediate CA carry its chain).
func (ca *CA) IssueWith(cn string, key *sm2.PrivateKey, ku smx509.KeyUsage, names ...string) *Issued {
	tmpl := &smx509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkixName(cn),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(Validity),
		KeyUsage:    ku,
		ExtKeyUsage: []smx509.ExtKeyUsage{smx509.ExtKeyUsageServerAuth, smx509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if u, err := url.Parse(n); err == nil && u.Scheme != "" {
			tmpl.URIs = append(tmpl.URIs, u)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		panic(err)
	}
	kder, err := smx509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	out := &Issued{CertPEM: append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.chain...),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}
	if out.Cert, err = tlcp.LoadCertificate(out.CertPEM, out.KeyPEM); err != nil {
		panic(err)
	}
	return out
}

func pkixName(cn string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{"Strait test"}}
}
