// Command dubbo is the Dubbo benchmark peer. "serve" is a provider that
// answers every call with the same pre-encoded hessian2 reply (so that
// its own cost is small and equal for both paths); "load" makes calls
// from C concurrent callers multiplexed over N connections for D and
// prints calls, calls/s, p50 and p99 latency in microseconds, and errors.
// bench/run.sh dubbo drives it against the provider directly and through
// Strait's dubbo_proxy. Request frames are built with dubbotest (on
// dubbo-go-hessian2) once per caller; only their ids change per call.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/protocol/dubbo/dubbotest"
)

const headerLen = 16

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: dubbo serve|load [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen (serve) or call (load) address")
	conc := fs.Int("c", 50, "concurrent callers (load)")
	conns := fs.Int("conns", 10, "connections the callers share (load)")
	dur := fs.Duration("d", 5*time.Second, "load duration (load)")
	size := fs.Int("size", 128, "argument and answer bytes")
	rate := fs.Int("rate", 0, "calls per second in all, on a fixed schedule (load; 0: each caller calls again as soon as answered). "+
		"A call's latency is then counted from when the schedule said to send it, so a late send counts as waiting")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "serve":
		serve(*addr, *size)
	case "load":
		load(*addr, *conc, *conns, *dur, *size, *rate)
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

func serve(addr string, size int) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	reply := dubbotest.EncodeResponse(0, strings.Repeat("r", size), "")
	// A heartbeat's answer: an event reply whose body is hessian2 null.
	pong := []byte{0xda, 0xbb, 0x22, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'N'}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			r := bufio.NewReaderSize(c, 64<<10)
			w := bufio.NewWriterSize(c, 64<<10)
			head := make([]byte, headerLen)
			out := slices.Clone(reply)
			for {
				if _, err := io.ReadFull(r, head); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint32(head[12:16]))
				if _, err := r.Discard(n); err != nil {
					return
				}
				switch {
				case head[2]&0x80 == 0: // a reply: ignore
					continue
				case head[2]&0x20 != 0: // heartbeat
					p := slices.Clone(pong)
					copy(p[4:12], head[4:12])
					w.Write(p)
				case head[2]&0x40 == 0: // one-way
					continue
				default:
					copy(out[4:12], head[4:12])
					w.Write(out)
				}
				if r.Buffered() == 0 {
					if w.Flush() != nil {
						return
					}
				}
			}
		}()
	}
}

// conn is one multiplexed consumer connection.
type conn struct {
	c       net.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	pending map[uint64]chan bool // id -> ok
	nextID  atomic.Uint64
}

func dial(addr string) (*conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	k := &conn{c: c, pending: map[uint64]chan bool{}}
	go k.read()
	return k, nil
}

func (k *conn) read() {
	r := bufio.NewReaderSize(k.c, 64<<10)
	head := make([]byte, headerLen)
	for {
		if _, err := io.ReadFull(r, head); err != nil {
			k.mu.Lock()
			for id, ch := range k.pending {
				ch <- false
				delete(k.pending, id)
			}
			k.pending = nil
			k.mu.Unlock()
			return
		}
		n := int(binary.BigEndian.Uint32(head[12:16]))
		if _, err := r.Discard(n); err != nil {
			continue
		}
		id := binary.BigEndian.Uint64(head[4:12])
		k.mu.Lock()
		ch := k.pending[id]
		delete(k.pending, id)
		k.mu.Unlock()
		if ch != nil {
			ch <- head[3] == 20
		}
	}
}

// call sends frame (its id rewritten) and waits for the answer.
func (k *conn) call(frame []byte, ch chan bool) bool {
	id := k.nextID.Add(1)
	binary.BigEndian.PutUint64(frame[4:12], id)
	k.mu.Lock()
	if k.pending == nil {
		k.mu.Unlock()
		return false
	}
	k.pending[id] = ch
	k.mu.Unlock()
	k.wmu.Lock()
	_, err := k.c.Write(frame)
	k.wmu.Unlock()
	if err != nil {
		return false
	}
	select {
	case ok := <-ch:
		return ok
	case <-time.After(5 * time.Second):
		return false
	}
}

func load(addr string, conc, nconns int, dur time.Duration, size, rate int) {
	cs := make([]*conn, nconns)
	for i := range cs {
		k, err := dial(addr)
		if err != nil {
			log.Fatal(err)
		}
		cs[i] = k
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		lat    []time.Duration
		errors atomic.Int64
	)
	deadline := time.Now().Add(dur)
	start := time.Now()
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func(k *conn) {
			defer wg.Done()
			frame, err := dubbotest.EncodeRequest(0, &dubbotest.Call{Service: "org.strait.bench.Echo", Method: "echo",
				Args: []any{strings.Repeat("a", size)}})
			if err != nil {
				log.Fatal(err)
			}
			ch := make(chan bool, 1)
			mine := make([]time.Duration, 0, 1<<16)
			// With a rate, this caller's share of it on a fixed
			// schedule, starting at a random point of its interval.
			var every time.Duration
			next := time.Now()
			if rate > 0 {
				every = time.Duration(float64(time.Second) * float64(conc) / float64(rate))
				next = next.Add(time.Duration(rand.Int64N(int64(every))))
			}
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if every > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					t0 = next
					next = next.Add(every)
				}
				if !k.call(frame, ch) {
					errors.Add(1)
					ch = make(chan bool, 1) // a late answer may still land in the old one
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(cs[i%nconns])
	}
	wg.Wait()
	took := time.Since(start)
	slices.Sort(lat)
	q := func(p float64) int64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))].Microseconds()
	}
	fmt.Printf("%d %.0f %d %d %d\n", len(lat), float64(len(lat))/took.Seconds(), q(0.50), q(0.99), errors.Load())
}
