package tlsconfig

import (
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"
)

// TestCertDetails: serial numbers in whole bytes as BoringSSL writes
// them, days left in whole days (0 once expired, and right for a
// certificate that runs to 9999), SANs by type.
func TestCertDetails(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	u, _ := url.Parse("spiffe://example.org/ns/a/sa/b")
	for _, tc := range []struct {
		serial   *big.Int
		notAfter time.Time
		hex      string
		days     uint64
	}{
		{big.NewInt(1), now.Add(90*24*time.Hour + time.Minute), "01", 90},
		{big.NewInt(0xabc), now.Add(24*time.Hour - time.Second), "0abc", 0},
		{big.NewInt(0), now.Add(-time.Hour), "0", 0},
		{big.NewInt(-0x1234), now.Add(48 * time.Hour), "-1234", 2},
		{big.NewInt(0x7f), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), "7f", 2912104},
	} {
		c := Cert{Source: "<inline>", Serial: tc.serial, NotBefore: now.Add(-time.Hour), NotAfter: tc.notAfter,
			DNS: []string{"a.example"}, URIs: []*url.URL{u}, IPs: []net.IP{net.ParseIP("::1")}}
		d := c.Details(now)
		if d.SerialNumber != tc.hex || d.DaysUntilExpiration != tc.days || d.Path != "<inline>" ||
			!d.ExpirationTime.AsTime().Equal(tc.notAfter) || !d.ValidFrom.AsTime().Equal(now.Add(-time.Hour)) {
			t.Errorf("serial %v, not after %v: %v; want serial %q, %d days", tc.serial, tc.notAfter, d, tc.hex, tc.days)
		}
		if len(d.SubjectAltNames) != 3 || d.SubjectAltNames[0].GetDns() != "a.example" ||
			d.SubjectAltNames[1].GetUri() != u.String() || d.SubjectAltNames[2].GetIpAddress() != "::1" {
			t.Errorf("SANs: %v", d.SubjectAltNames)
		}
	}
}
