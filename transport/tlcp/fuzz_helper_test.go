package tlcp

import (
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// fuzzServer is a server config with a self-signed pair (the
// tlcptest package imports this one, so it cannot be used here).
func fuzzServer() *Config {
	mk := func(ku smx509.KeyUsage) *Certificate {
		key, _ := sm2.GenerateKey(rand.Reader)
		tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: ku}
		der, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			panic(err)
		}
		kder, _ := smx509.MarshalPKCS8PrivateKey(key)
		c, err := LoadCertificate(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
		if err != nil {
			panic(err)
		}
		return c
	}
	return &Config{SignCert: mk(smx509.KeyUsageDigitalSignature), EncCert: mk(smx509.KeyUsageKeyEncipherment),
		ClientAuth: VerifyClientCertIfGiven, Sessions: NewSessionCache(4, time.Minute)}
}
