// Command tlsload measures TLS or TLCP against a server, in one of two
// modes:
//   - handshakes (default): c clients each open a connection, handshake,
//     send one HTTP/1.1 request, read the answer and close, for d; with
//     -resume each client resumes its previous session (a ticket for
//     TLS, the session ID for TLCP). It prints
//     "handshakes N per_sec R resumed K errors E".
//   - -bulk PATH: c kept-alive connections each request PATH over and
//     over for d; it prints "bytes N mib_per_sec R requests K errors E".
//
// -tlcp speaks TLCP (transport/tlcp) offering -suite. Loopback only;
// bounded by -d and -max.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/transport/tlcp"
	"github.com/straitproxy/strait/transport/tlcp/tlcptest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "server address (loopback)")
	c := flag.Int("c", 8, "concurrent clients")
	d := flag.Duration("d", 5*time.Second, "duration")
	max := flag.Int("max", 1_000_000, "stop after this many handshakes or requests")
	resume := flag.Bool("resume", false, "resume sessions")
	tls12 := flag.Bool("tls12", false, "TLS 1.2 only")
	useTLCP := flag.Bool("tlcp", false, "speak TLCP")
	suite := flag.String("suite", "ECC_SM4_GCM_SM3", "the TLCP suite to offer")
	bulk := flag.String("bulk", "", "bulk mode: the path to request on kept-alive connections")
	gen := flag.String("gen-tlcp", "", "write an SM2 CA and a TLCP signing and encryption pair into this directory and exit")
	genName := flag.String("gen-name", "localhost", "the pair's DNS name (-gen-tlcp)")
	genDays := flag.Int("gen-days", 2, "the certificates' validity in days (-gen-tlcp)")
	flag.Parse()
	if *gen != "" {
		tlcptest.Validity = time.Duration(*genDays) * 24 * time.Hour
		ca := tlcptest.NewCA("Strait example SM2 CA")
		sign, enc := ca.Issue(*genName+" sign", false, *genName), ca.Issue(*genName+" enc", true, *genName)
		for name, b := range map[string][]byte{"ca.pem": ca.PEM, "sign.pem": sign.CertPEM, "sign-key.pem": sign.KeyPEM, "enc.pem": enc.CertPEM, "enc-key.pem": enc.KeyPEM} {
			if err := os.WriteFile(filepath.Join(*gen, name), b, 0o600); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		return
	}

	var tlcpSuite uint16
	if *useTLCP {
		id, ok := tlcp.SuiteByName(*suite)
		if !ok {
			fmt.Fprintln(os.Stderr, "unknown suite", *suite)
			os.Exit(2)
		}
		tlcpSuite = id
	}
	// dial returns a new connection and whether it resumed.
	newDialer := func() func() (net.Conn, func() bool, error) {
		if *useTLCP {
			cfg := &tlcp.Config{InsecureSkipVerify: true, ServerName: "localhost", Suites: []uint16{tlcpSuite}}
			if *resume {
				cfg.Sessions = tlcp.NewSessionCache(1, time.Hour)
			}
			return func() (net.Conn, func() bool, error) {
				nc, err := net.Dial("tcp", *addr)
				if err != nil {
					return nil, nil, err
				}
				tc := tlcp.Client(nc, cfg)
				if err := tc.Handshake(); err != nil {
					nc.Close()
					return nil, nil, err
				}
				return tc, func() bool { return tc.ConnectionState().DidResume }, nil
			}
		}
		cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
		if *tls12 {
			cfg.MaxVersion = tls.VersionTLS12
		}
		if *resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		return func() (net.Conn, func() bool, error) {
			tc, err := tls.Dial("tcp", *addr, cfg)
			if err != nil {
				return nil, nil, err
			}
			return tc, func() bool { return tc.ConnectionState().DidResume }, nil
		}
	}

	var n, resumed, errs, bytes atomic.Int64
	deadline := time.Now().Add(*d)
	start := time.Now()
	var wg sync.WaitGroup
	for range *c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dial := newDialer()
			if *bulk != "" {
				conn, _, err := dial()
				if err != nil {
					errs.Add(1)
					return
				}
				defer conn.Close()
				br := bufio.NewReaderSize(conn, 64<<10)
				for time.Now().Before(deadline) && n.Load() < int64(*max) {
					conn.SetDeadline(time.Now().Add(5 * time.Second))
					io.WriteString(conn, "GET "+*bulk+" HTTP/1.1\r\nHost: localhost\r\n\r\n")
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						errs.Add(1)
						return
					}
					m, err := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 {
						errs.Add(1)
						return
					}
					bytes.Add(m)
					n.Add(1)
				}
				return
			}
			for time.Now().Before(deadline) && n.Load() < int64(*max) {
				conn, didResume, err := dial()
				if err != nil {
					errs.Add(1)
					continue
				}
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					errs.Add(1)
				} else {
					n.Add(1)
					if didResume() {
						resumed.Add(1)
					}
				}
				conn.Close()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if *bulk != "" {
		fmt.Printf("bytes %d mib_per_sec %.0f requests %d errors %d\n", bytes.Load(), float64(bytes.Load())/el/(1<<20), n.Load(), errs.Load())
	} else {
		fmt.Printf("handshakes %d per_sec %.0f resumed %d errors %d\n", n.Load(), float64(n.Load())/el, resumed.Load(), errs.Load())
	}
	if errs.Load() > 0 {
		os.Exit(1)
	}
}
