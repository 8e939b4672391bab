// Package fault is strait.filters.network.fault: fault injection on
// connections, for a percentage of them each: a delay of the first bytes
// or of every read, an abort on accept or after a number of bytes (a
// close, or a reset), and a bandwidth limit per direction; combinable.
// Envoy has no such filter; its config is a TypedStruct (README.md).
package fault

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Name and TypeURL name the filter and its config.
const (
	Name    = "strait.filters.network.fault"
	TypeURL = "type.googleapis.com/strait.filters.network.fault.v1.Fault"
)

func init() {
	filter.RegisterNetworkStruct(Name, TypeURL, func(bc *filter.BuildContext, m proto.Message) (filter.NetworkFactory, error) {
		f, err := build(bc, m.(*structpb.Struct))
		if err != nil {
			return nil, err
		}
		return filter.ReadFilterFactory(f), nil
	})
}

// settings is the config as written (README.md).
type settings struct {
	StatPrefix string `json:"stat_prefix"`
	Delay      *struct {
		Percent   *float64 `json:"percent"`
		Duration  string   `json:"duration"`
		EveryRead bool     `json:"every_read"`
	} `json:"delay"`
	Abort *struct {
		Percent            *float64 `json:"percent"`
		AfterBytesReceived int64    `json:"after_bytes_received"`
		AfterBytesSent     int64    `json:"after_bytes_sent"`
		Reset              bool     `json:"reset"`
	} `json:"abort"`
	Throttle *struct {
		Percent             *float64 `json:"percent"`
		ReadBytesPerSecond  int64    `json:"read_bytes_per_second"`
		WriteBytesPerSecond int64    `json:"write_bytes_per_second"`
	} `json:"throttle"`
}

// factory is the built filter, shared by the listener's connections.
type factory struct {
	delayPct, abortPct, throttlePct float64
	delay                           time.Duration
	everyRead                       bool
	abortRecv, abortSent            int64
	reset                           bool
	readRate, writeRate             int64
	hasDelay, hasAbort, hasThrottle bool

	delays, aborts, throttles *stats.Counter
	active                    *stats.Gauge
}

func percent(p *float64, path string) (float64, error) {
	if p == nil {
		return 100, nil
	}
	if *p < 0 || *p > 100 {
		return 0, config.At(path, fmt.Errorf("%v is not a percentage (0 to 100)", *p))
	}
	return *p, nil
}

func build(bc *filter.BuildContext, m *structpb.Struct) (*factory, error) {
	var s settings
	if err := config.DecodeStruct(m, &s); err != nil {
		return nil, err
	}
	if s.StatPrefix == "" {
		return nil, config.At("stat_prefix", errors.New("is required"))
	}
	if s.Delay == nil && s.Abort == nil && s.Throttle == nil {
		return nil, errors.New("at least one of delay, abort and throttle is required")
	}
	f := &factory{}
	var err error
	if d := s.Delay; d != nil {
		f.hasDelay, f.everyRead = true, d.EveryRead
		if f.delayPct, err = percent(d.Percent, "delay.percent"); err != nil {
			return nil, err
		}
		if f.delay, err = time.ParseDuration(d.Duration); err != nil || f.delay <= 0 {
			return nil, config.At("delay.duration", fmt.Errorf("%q is not a positive duration (e.g. \"250ms\")", d.Duration))
		}
	}
	if a := s.Abort; a != nil {
		f.hasAbort, f.reset = true, a.Reset
		if f.abortPct, err = percent(a.Percent, "abort.percent"); err != nil {
			return nil, err
		}
		if a.AfterBytesReceived < 0 || a.AfterBytesSent < 0 {
			return nil, config.At("abort", errors.New("after_bytes_received and after_bytes_sent must not be negative"))
		}
		f.abortRecv, f.abortSent = a.AfterBytesReceived, a.AfterBytesSent
	}
	if t := s.Throttle; t != nil {
		f.hasThrottle = true
		if f.throttlePct, err = percent(t.Percent, "throttle.percent"); err != nil {
			return nil, err
		}
		if t.ReadBytesPerSecond < 0 || t.WriteBytesPerSecond < 0 {
			return nil, config.At("throttle", errors.New("rates must not be negative"))
		}
		if t.ReadBytesPerSecond == 0 && t.WriteBytesPerSecond == 0 {
			return nil, config.At("throttle", errors.New("read_bytes_per_second or write_bytes_per_second is required"))
		}
		f.readRate, f.writeRate = t.ReadBytesPerSecond, t.WriteBytesPerSecond
	}
	sc := bc.Stats.Scope("network_fault", "", s.StatPrefix)
	f.delays, f.aborts, f.throttles = sc.Counter("delays_injected"), sc.Counter("aborts_injected"), sc.Counter("throttles_injected")
	f.active = sc.Gauge("active_faults")
	return f, nil
}

// roll decides one fault for one connection.
func roll(has bool, pct float64) bool {
	return has && (pct >= 100 || pct > 0 && rand.Float64()*100 < pct)
}

// NewReadFilter decides the connection's faults.
func (f *factory) NewReadFilter(*network.Conn) (filter.ReadFilter, error) {
	c := &conn{f: f}
	c.abort = roll(f.hasAbort, f.abortPct)
	if c.abort && f.abortRecv == 0 && f.abortSent == 0 {
		// Aborted on accept: no other fault has anything to act on.
		c.faulty = true
		f.active.Inc()
		return c, nil
	}
	c.delay = roll(f.hasDelay, f.delayPct)
	if roll(f.hasThrottle, f.throttlePct) {
		f.throttles.Inc()
		now := time.Now()
		if f.readRate > 0 {
			c.rd = &bucket{rate: f.readRate, at: now}
		}
		if f.writeRate > 0 {
			c.wr = &bucket{rate: f.writeRate, at: now}
		}
	}
	if c.delay || c.abort || c.rd != nil || c.wr != nil {
		c.faulty = true
		f.active.Inc()
	}
	return c, nil
}

// conn is one connection's faults. OnNewConnection and OnData run on
// the connection's reader, OnWrite on its writers (under the write
// lock), the timers on their own: mu guards what they share.
type conn struct {
	f      *factory
	faulty bool
	delay  bool // a delay applies to this connection
	abort  bool
	rd, wr *bucket

	mu       sync.Mutex
	delayed  bool  // the first delay happened (first-bytes mode)
	released bool  // a delay's timer fired: the held bytes go on
	covered  int64 // bytes (from the start) a delay has held already
	timer    *time.Timer
	recv     int64 // bytes let through from the client
	sent     int64 // bytes let out to the client
	done     bool  // aborted or destroyed
}

func (c *conn) OnNewConnection(cb filter.ConnCallbacks) filter.Status {
	if c.abort && c.f.abortRecv == 0 && c.f.abortSent == 0 {
		c.f.aborts.Inc()
		c.mu.Lock()
		c.done = true
		c.mu.Unlock()
		cb.Close(c.f.reset)
		return filter.Stop
	}
	return filter.Continue
}

func (c *conn) OnData(cb filter.ConnCallbacks, data []byte, end bool) (int, filter.Status) {
	if end || len(data) == 0 {
		return 0, filter.Continue
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return 0, filter.Stop
	}
	upTo := c.recv + int64(len(data))
	if c.released {
		// The bytes held during the delay, and any read with them, waited.
		c.released, c.covered = false, upTo
	}
	if c.delay && (c.f.everyRead && upTo > c.covered || !c.f.everyRead && !c.delayed) {
		c.delayed = true
		c.f.delays.Inc()
		k := cb.Continuation()
		c.timer = time.AfterFunc(c.f.delay, func() {
			c.mu.Lock()
			c.released = true
			c.mu.Unlock()
			k.Continue()
		})
		return 0, filter.Stop
	}
	// Bytes a throttle held are offered again: they are not a new read.
	n := len(data)
	if c.abort && c.f.abortRecv > 0 {
		n = int(min(int64(n), c.f.abortRecv-c.recv))
	}
	st := filter.Continue
	if c.rd != nil {
		if wait, allowed := c.rd.take(n, time.Now()); allowed < n {
			n = allowed
			k := cb.Continuation()
			c.timer = time.AfterFunc(wait, k.Continue)
			st = filter.Stop
		}
	}
	c.recv += int64(n)
	if c.abort && c.f.abortRecv > 0 && c.recv >= c.f.abortRecv {
		// The bytes up to the limit go on, then the connection ends.
		c.f.aborts.Inc()
		c.done = true
		cb.Close(c.f.reset)
		return n, filter.Stop
	}
	return n, st
}

// OnWrite throttles and counts what goes to the client.
func (c *conn) OnWrite(cb filter.ConnCallbacks, data []byte) ([]byte, error) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return nil, errAborted
	}
	out, ending := data, false
	if c.abort && c.f.abortSent > 0 && c.sent+int64(len(out)) >= c.f.abortSent {
		out = out[:c.f.abortSent-c.sent]
		ending = true
		c.done = true
		c.f.aborts.Inc()
	}
	c.sent += int64(len(out))
	var wait time.Duration
	if c.wr != nil && len(out) > 0 {
		wait = c.wr.debt(len(out), time.Now())
	}
	c.mu.Unlock()
	// The writer waits (pushing back on the upstream the bytes come
	// from), in steps, until the connection closes at the latest.
	for wait > 0 {
		if cb.Conn().Closed() {
			return nil, errAborted
		}
		step := min(wait, 100*time.Millisecond)
		time.Sleep(step)
		wait -= step
	}
	if ending {
		cb.Close(c.f.reset) // after these bytes are written
	}
	return out, nil
}

// OnDestroy stops a pending timer.
func (c *conn) OnDestroy() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.faulty {
		c.faulty = false
		c.f.active.Dec()
	}
}

var errAborted = errors.New("strait.filters.network.fault: connection aborted")

// bucket is a token bucket of bytes per second, starting empty, with a
// burst of a tenth of a second's worth (at least a byte).
type bucket struct {
	rate   int64
	tokens float64
	at     time.Time
}

func (b *bucket) refill(now time.Time) {
	burst := max(1, float64(b.rate)/10)
	b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()*float64(b.rate))
	b.at = now
}

// take lets through at most n bytes now; when fewer, wait is when more
// may go.
func (b *bucket) take(n int, now time.Time) (wait time.Duration, allowed int) {
	b.refill(now)
	if b.tokens >= float64(n) {
		b.tokens -= float64(n)
		return 0, n
	}
	allowed = max(0, int(b.tokens))
	b.tokens -= float64(allowed)
	// Wait for a useful amount: a hundredth of a second's worth, or the
	// rest of the read.
	need := min(float64(n-allowed), max(1, float64(b.rate)/100))
	wait = time.Duration((need - b.tokens) / float64(b.rate) * float64(time.Second))
	return max(wait, time.Millisecond), allowed
}

// debt takes n bytes, going into debt, and returns how long the writer
// must wait for the debt to be repaid.
func (b *bucket) debt(n int, now time.Time) time.Duration {
	b.refill(now)
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / float64(b.rate) * float64(time.Second))
}
