package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/url"
	"strings"

	"github.com/straitproxy/strait/protocol"
)

// x-forwarded-client-cert (XFCC): what the connection manager tells the
// upstream about a client's certificate, as Envoy's
// forward_client_cert_details and set_current_client_cert_details say.
// Each proxy adds an element, "Key=value;..." (elements are joined with
// commas): By (each URI SAN of the certificate this proxy presented),
// Hash (SHA-256 of the client's certificate, hex), then what
// ClientCertDetails asks for: Cert and Chain (URL-encoded PEM), Subject
// (RFC 2253), URI and DNS (one pair per SAN).

const xfccHeader = "x-forwarded-client-cert"

// XFCCMode is forward_client_cert_details.
type XFCCMode uint8

const (
	// XFCCSanitize removes the header (the default).
	XFCCSanitize XFCCMode = iota
	// XFCCForwardOnly forwards the client's header when the connection
	// is mutual TLS; otherwise removes it.
	XFCCForwardOnly
	// XFCCAppendForward appends this hop's element over mutual TLS.
	XFCCAppendForward
	// XFCCSanitizeSet replaces the header by this hop's element over
	// mutual TLS.
	XFCCSanitizeSet
	// XFCCAlwaysForwardOnly forwards the client's header whatever the
	// connection.
	XFCCAlwaysForwardOnly
)

// ClientCertDetails is set_current_client_cert_details: the fields of
// this hop's element besides Hash.
type ClientCertDetails struct {
	Subject, Cert, Chain, DNS, URI bool
}

// clientCert applies forward_client_cert_details to the request.
func (s *Stream) clientCert(h *protocol.Headers) {
	mode := s.cfg.XFCC
	switch mode {
	case XFCCAlwaysForwardOnly:
		return
	case XFCCSanitize:
		h.Del(xfccHeader)
		return
	}
	elem := s.cm.xfccElement()
	switch {
	case elem == nil: // not mutual TLS
		h.Del(xfccHeader)
	case mode == XFCCAppendForward:
		// Every line the client sent, joined, then this hop's.
		s.scratch = s.scratch[:0]
		h.Visit(func(name, value []byte) bool {
			if len(value) > 0 && protocol.EqualFold(name, xfccHeader) {
				s.scratch = append(append(s.scratch, value...), ',')
			}
			return true
		})
		h.SetBytes(xfccHeader, append(s.scratch, elem...))
	case mode == XFCCSanitizeSet:
		h.SetBytes(xfccHeader, elem)
	}
}

// xfccElement is this hop's element for the connection's client
// certificate, made once per connection; nil when the connection is not
// mutual TLS.
func (cm *connManager) xfccElement() []byte {
	cm.xfccOnce.Do(func() {
		cs, ok := cm.conn.TLSState()
		if !ok || len(cs.PeerCertificates) == 0 {
			return
		}
		cm.xfcc = appendXFCC(nil, cm.conn.LocalCertificate(), cs.PeerCertificates, cm.cfg.ClientCertDetails)
	})
	return cm.xfcc
}

// appendXFCC appends the element for the peer's chain (leaf first), as
// seen by a proxy that presented local (nil: unknown).
func appendXFCC(b []byte, local *x509.Certificate, chain []*x509.Certificate, d ClientCertDetails) []byte {
	leaf := chain[0]
	sum := sha256.Sum256(leaf.Raw)
	start := len(b)
	if local != nil {
		for _, u := range local.URIs {
			b = appendPair(b, "By", u.String())
		}
	}
	if len(b) > start {
		b = append(b[:start], b[start+1:]...) // the first pair's ';'
		b = append(b, ';')
	}
	b = append(b, "Hash="...)
	b = hex.AppendEncode(b, sum[:])
	if d.Cert {
		b = appendQuoted(b, "Cert", pemEscape(leaf))
	}
	if d.Chain {
		var all strings.Builder
		for _, c := range chain {
			all.WriteString(pemEscape(c))
		}
		b = appendQuoted(b, "Chain", all.String())
	}
	if d.Subject {
		// (RFC 2253 escapes its own specials: written as it is.)
		b = append(append(append(b, `;Subject="`...), leaf.Subject.String()...), '"')
	}
	if d.URI {
		if len(leaf.URIs) == 0 {
			b = append(b, ";URI="...) // as Envoy writes it
		}
		for _, u := range leaf.URIs {
			b = appendPair(b, "URI", u.String())
		}
	}
	if d.DNS {
		for _, n := range leaf.DNSNames {
			b = appendPair(b, "DNS", n)
		}
	}
	return b
}

// pemEscape is the certificate's PEM, URL-encoded (spaces as %20).
func pemEscape(c *x509.Certificate) string {
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	return strings.ReplaceAll(url.QueryEscape(string(p)), "+", "%20")
}

// appendQuoted appends ";key=\"value\"" (a quote or backslash in value
// escaped).
func appendQuoted(b []byte, key, value string) []byte {
	b = append(append(append(b, ';'), key...), `="`...)
	for i := 0; i < len(value); i++ {
		if value[i] == '"' || value[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, value[i])
	}
	return append(b, '"')
}

// appendPair appends ";key=value", quoted when value holds a separator.
func appendPair(b []byte, key, value string) []byte {
	if strings.ContainsAny(value, `,;="`) {
		return appendQuoted(b, key, value)
	}
	return append(append(append(append(b, ';'), key...), '='), value...)
}
