// Command upstream is the benchmarks' origin: an HTTP/1.1 server that
// answers every request with a fixed-size body (default 128 bytes).
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
	"strings"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	size := flag.Int("size", 128, "response body bytes")
	flag.Parse()
	body := []byte(strings.Repeat("x", *size))
	cl := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = []string{cl}
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Write(body)
	})
	log.Fatal(http.ListenAndServe(*addr, h))
}
