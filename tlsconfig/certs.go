package tlsconfig

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Cert is what the admin's /certs shows of one certificate, whatever
// library parsed it (crypto/x509, or smx509 for SM2).
type Cert struct {
	// Source is the file it came from, or "<inline>".
	Source              string
	Serial              *big.Int
	NotBefore, NotAfter time.Time
	DNS                 []string
	URIs                []*url.URL
	IPs                 []net.IP
}

// FromX509 describes a certificate crypto/x509 parsed.
func FromX509(source string, c *x509.Certificate) Cert {
	return Cert{Source: source, Serial: c.SerialNumber, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		DNS: c.DNSNames, URIs: c.URIs, IPs: c.IPAddresses}
}

// SourceName names a data source as Envoy's /certs does: the file, or
// "<inline>".
func SourceName(ds *corev3.DataSource) string {
	if f := ds.GetFilename(); f != "" {
		return f
	}
	return "<inline>"
}

// PEMBlocks returns the DER of each block of type typ in a PEM bundle
// ("CERTIFICATE", "X509 CRL"), in order, up to the first that does not
// decode.
func PEMBlocks(b []byte, typ string) [][]byte {
	var out [][]byte
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return out
		}
		if blk.Type == typ {
			out = append(out, blk.Bytes)
		}
	}
}

// ParsePEM parses every CERTIFICATE block of a PEM bundle (those
// crypto/x509 cannot parse are left out).
func ParsePEM(source string, b []byte) []Cert {
	var out []Cert
	for _, der := range PEMBlocks(b, "CERTIFICATE") {
		if c, err := x509.ParseCertificate(der); err == nil {
			out = append(out, FromX509(source, c))
		}
	}
	return out
}

// Details is Envoy's CertificateDetails of c at now: days until
// expiration count whole days and are 0 once it expired.
func (c Cert) Details(now time.Time) *adminv3.CertificateDetails {
	d := &adminv3.CertificateDetails{Path: c.Source, ValidFrom: timestamppb.New(c.NotBefore),
		ExpirationTime: timestamppb.New(c.NotAfter)}
	if c.Serial != nil {
		d.SerialNumber = serialHex(c.Serial)
	}
	// (In seconds: a Duration ends at 292 years, and "never expires"
	// certificates run to 9999.)
	if left := c.NotAfter.Unix() - now.Unix(); left > 0 {
		d.DaysUntilExpiration = uint64(left / 86400)
	}
	for _, n := range c.DNS {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Dns{Dns: n}})
	}
	for _, u := range c.URIs {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Uri{Uri: u.String()}})
	}
	for _, ip := range c.IPs {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_IpAddress{IpAddress: ip.String()}})
	}
	return d
}

// serialHex writes a serial number as Envoy does (BoringSSL's
// BN_bn2hex): lowercase hex in whole bytes, "01" for 1.
func serialHex(n *big.Int) string {
	if n.Sign() == 0 {
		return "0"
	}
	s := hex.EncodeToString(new(big.Int).Abs(n).Bytes())
	if n.Sign() < 0 {
		return "-" + s
	}
	return s
}

// Certificates is one TLS context's /certs entry: its CA certificates
// and the leaf of each of its own chains.
func Certificates(cas, chain []Cert, now time.Time) *adminv3.Certificate {
	out := &adminv3.Certificate{}
	for _, c := range cas {
		out.CaCert = append(out.CaCert, c.Details(now))
	}
	for _, c := range chain {
		out.CertChain = append(out.CertChain, c.Details(now))
	}
	return out
}
