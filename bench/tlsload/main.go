// Command tlsload measures TLS handshakes against a server: c clients
// each open a connection, handshake, send one HTTP/1.1 request, read the
// answer and close, for d; with -resume each client resumes its previous
// session (a ticket). It prints "handshakes N per_sec R resumed K errors E".
// Loopback only; bounded by -d and -max.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "server address (loopback)")
	c := flag.Int("c", 8, "concurrent clients")
	d := flag.Duration("d", 5*time.Second, "duration")
	max := flag.Int("max", 1_000_000, "stop after this many handshakes")
	resume := flag.Bool("resume", false, "resume sessions (tickets)")
	tls12 := flag.Bool("tls12", false, "TLS 1.2 only")
	flag.Parse()

	var n, resumed, errs atomic.Int64
	deadline := time.Now().Add(*d)
	start := time.Now()
	var wg sync.WaitGroup
	for range *c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
			if *tls12 {
				cfg.MaxVersion = tls.VersionTLS12
			}
			if *resume {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			for time.Now().Before(deadline) && n.Load() < int64(*max) {
				conn, err := tls.Dial("tcp", *addr, cfg)
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
					if conn.ConnectionState().DidResume {
						resumed.Add(1)
					}
				}
				conn.Close()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("handshakes %d per_sec %.0f resumed %d errors %d\n", n.Load(), float64(n.Load())/el, resumed.Load(), errs.Load())
	if errs.Load() > 0 {
		os.Exit(1)
	}
}
