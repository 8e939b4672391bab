// Command idleclient opens many HTTP/1.1 keep-alive connections to a
// proxy, sends one request on each and keeps them open and idle. On a line
// "wake" on stdin it sends one more request on the first -wake of them and
// checks every answer; on "quit" (or end of input) it closes everything.
// With -tls the connections are TLS.
// It prints one line per step so that a script can follow it.
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
	"sync"
	"sync/atomic"
	"time"
)

type client struct {
	c  net.Conn
	br *bufio.Reader
}

func (cl *client) roundTrip(path string) error {
	cl.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(cl.c, "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", path); err != nil {
		return err
	}
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	cl.c.SetDeadline(time.Time{})
	return err
}

func main() {
	addr := flag.String("addr", "127.0.0.1:10000", "proxy address")
	n := flag.Int("n", 10000, "connections to open")
	wake := flag.Int("wake", 1000, "connections that send again on 'wake'")
	par := flag.Int("parallel", 64, "connections opened at once")
	useTLS := flag.Bool("tls", false, "TLS (the server's certificate is not checked; HTTP/1.1 by ALPN)")
	flag.Parse()
	tlsCfg := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"http/1.1"}}

	clients := make([]*client, *n)
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, *par)
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var c net.Conn
			var err error
			if *useTLS {
				c, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", *addr, tlsCfg)
			} else {
				c, err = net.DialTimeout("tcp", *addr, 10*time.Second)
			}
			if err != nil {
				failed.Add(1)
				return
			}
			cl := &client{c: c, br: bufio.NewReaderSize(c, 512)}
			if err := cl.roundTrip("/first"); err != nil {
				c.Close()
				failed.Add(1)
				return
			}
			clients[i] = cl
		}()
	}
	wg.Wait()
	fmt.Printf("connected=%d failed=%d seconds=%.2f\n", *n-int(failed.Load()), failed.Load(), time.Since(start).Seconds())

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "wake":
			var ok, bad atomic.Int64
			var wg sync.WaitGroup
			for i := 0; i < *wake && i < len(clients); i++ {
				cl := clients[i]
				if cl == nil {
					bad.Add(1)
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := cl.roundTrip("/again"); err != nil {
						bad.Add(1)
						return
					}
					ok.Add(1)
				}()
			}
			wg.Wait()
			fmt.Printf("woke=%d ok=%d failed=%d\n", *wake, ok.Load(), bad.Load())
		case "quit":
			return
		}
	}
}
