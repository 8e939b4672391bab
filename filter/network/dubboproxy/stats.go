package dubboproxy

import (
	"sync"
	"time"

	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/protocol/rpc"
	"github.com/straitproxy/strait/proxy"
	"github.com/straitproxy/strait/stats"
)

// callStats counts finished calls, in Envoy's dubbo_proxy names under
// dubbo.<stat_prefix>. (request, request_twoway, request_oneway,
// response_success, response_error, response_business_exception), and the
// same per service and method under
// dubbo.<stat_prefix>.service.<service>.method.<method>. with a
// request_time histogram (milliseconds). In Prometheus the service and
// method are the labels dubbo_service and dubbo_method.
//
// Service and method names come from clients, so the per-method set is
// bounded: past maxMethods pairs, or for names longer than maxNameLen,
// calls count under service "other", method "other".
type callStats struct {
	scope  *stats.Scope
	all    methodStats
	oneway *stats.Counter
	twoway *stats.Counter
	// Frames the engine handles before a stream: request_event (client
	// heartbeats), request_decoding_success, request_decoding_error.
	event, decoded, decodeErr *stats.Counter

	mu     sync.RWMutex
	byName map[string]map[string]*methodStats // service, method
	n      int
	other  *methodStats
}

const (
	maxMethods = 1000
	maxNameLen = 256
)

type methodStats struct {
	request, success, errors, exceptions *stats.Counter
	time                                 *stats.Histogram
}

func newMethodStats(sc *stats.Scope, withTime bool) methodStats {
	m := methodStats{
		request:    sc.Counter("request"),
		success:    sc.Counter("response_success"),
		errors:     sc.Counter("response_error"),
		exceptions: sc.Counter("response_business_exception"),
	}
	if withTime {
		m.time = sc.Histogram("request_time")
	}
	return m
}

func newCallStats(sc *stats.Scope) *callStats {
	return &callStats{
		scope:  sc,
		all:    newMethodStats(sc, false),
		oneway: sc.Counter("request_oneway"),
		twoway: sc.Counter("request_twoway"),
		event:  sc.Counter("request_event"),

		decoded:   sc.Counter("request_decoding_success"),
		decodeErr: sc.Counter("request_decoding_error"),
		byName:    map[string]map[string]*methodStats{},
	}
}

var (
	_ proxy.Observer = (*callStats)(nil)
	_ rpc.Events     = (*callStats)(nil)
)

// Heartbeat counts a client's heartbeat (request_event).
func (c *callStats) Heartbeat() { c.event.Inc() }

// Decoded counts a call frame read (request_decoding_success) or refused
// as malformed or oversized (request_decoding_error).
func (c *callStats) Decoded(ok bool) {
	if ok {
		c.decoded.Inc()
	} else {
		c.decodeErr.Inc()
	}
}

// StreamDone counts one call.
func (c *callStats) StreamDone(req *protocol.Headers, status int, exception bool, took time.Duration) {
	svc, _ := req.Get(protocol.Authority)
	method, _ := req.Get(rpc.MethodHeader)
	m := c.method(svc, method)
	if req.Has(rpc.OneWayHeader) {
		c.oneway.Inc()
	} else {
		c.twoway.Inc()
	}
	ms := float64(took.Microseconds()) / 1000
	m.time.Observe(ms)
	for _, s := range [2]*methodStats{&c.all, m} {
		s.request.Inc()
		switch {
		case status != 200:
			s.errors.Inc()
		case exception:
			s.exceptions.Inc()
		default:
			s.success.Inc()
		}
	}
}

// method returns the counters of service/method, making them on first use.
func (c *callStats) method(svc, method []byte) *methodStats {
	c.mu.RLock()
	m := c.byName[string(svc)][string(method)]
	c.mu.RUnlock()
	if m != nil {
		return m
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m = c.byName[string(svc)][string(method)]; m != nil {
		return m
	}
	if c.n >= maxMethods || len(svc)+len(method) > maxNameLen {
		if c.other == nil {
			c.other = c.make("other", "other")
		}
		return c.other
	}
	ms := c.byName[string(svc)]
	if ms == nil {
		ms = map[string]*methodStats{}
		c.byName[string(svc)] = ms
	}
	m = c.make(string(svc), string(method))
	ms[string(method)] = m
	c.n++
	return m
}

func (c *callStats) make(svc, method string) *methodStats {
	m := newMethodStats(c.scope.Scope("service", "dubbo_service", svc).Scope("method", "dubbo_method", method), true)
	return &m
}
