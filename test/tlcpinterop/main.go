// Command tlcp-peer is the TLCP interop peer of Strait's tests, on
// github.com/tjfoc/gmsm's gmtls (GM/T 0024, ECC_SM4_CBC_SM3): a client
// that sends one HTTP/1.1 request and prints the answer, and a server
// that answers HTTP/1.1. It lives in its own module so that tjfoc never
// enters Strait's; scripts/install-test-deps.sh builds it into
// .tools/bin.
//
//	tlcp-peer client -connect ADDR -ca CA.pem -name NAME [-cert C -key K] [-path /p]
//	tlcp-peer server -sign-cert C -sign-key K -enc-cert C -enc-key K [-ca CA.pem]
//
// The server prints its address on its first line of output.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/tjfoc/gmsm/gmtls"
	"github.com/tjfoc/gmsm/x509"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tlcp-peer client|server [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "client":
		err = client(os.Args[2:])
	case "server":
		err = server(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlcp-peer:", err)
		os.Exit(1)
	}
}

func pool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no certificate", file)
	}
	return p, nil
}

func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	addr := fs.String("connect", "", "address")
	ca := fs.String("ca", "", "CA PEM")
	name := fs.String("name", "", "server name")
	cert := fs.String("cert", "", "client signing certificate PEM (client authentication)")
	key := fs.String("key", "", "its key PEM")
	path := fs.String("path", "/", "request path")
	fs.Parse(args)
	roots, err := pool(*ca)
	if err != nil {
		return err
	}
	cfg := &gmtls.Config{GMSupport: &gmtls.GMSupport{}, RootCAs: roots, ServerName: *name,
		CipherSuites: []uint16{gmtls.GMTLS_SM2_WITH_SM4_SM3}}
	if *cert != "" {
		c, err := gmtls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			return err
		}
		// gmtls's own choice never picks an SM2 certificate (it looks
		// for an *ecdsa.PublicKey, and its x509 parses SM2 keys into
		// *sm2.PublicKey): hand it over directly.
		cfg.GetClientCertificate = func(*gmtls.CertificateRequestInfo) (*gmtls.Certificate, error) { return &c, nil }
	}
	conn, err := gmtls.Dial("tcp", *addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", *path, *name)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("%d %s\n", resp.StatusCode, body)
	return nil
}

func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	signCert := fs.String("sign-cert", "", "")
	signKey := fs.String("sign-key", "", "")
	encCert := fs.String("enc-cert", "", "")
	encKey := fs.String("enc-key", "", "")
	ca := fs.String("ca", "", "CA PEM: ask for and verify client certificates")
	fs.Parse(args)
	sign, err := gmtls.LoadX509KeyPair(*signCert, *signKey)
	if err != nil {
		return err
	}
	enc, err := gmtls.LoadX509KeyPair(*encCert, *encKey)
	if err != nil {
		return err
	}
	cfg := &gmtls.Config{GMSupport: &gmtls.GMSupport{}, Certificates: []gmtls.Certificate{sign, enc},
		CipherSuites: []uint16{gmtls.GMTLS_SM2_WITH_SM4_SM3}}
	if *ca != "" {
		if cfg.ClientCAs, err = pool(*ca); err != nil {
			return err
		}
		cfg.ClientAuth = gmtls.RequireAndVerifyClientCert
	}
	ln, err := gmtls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tjfoc answers %s %s", r.Method, r.URL.Path)
	}))
}
