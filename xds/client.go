package xds

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Handler applies what the management server sends. Apply receives, for
// one type, the complete set of resources the client would hold after
// the response: for LDS and CDS exactly the response's set, for the other
// types the previous set with the response's resources replaced or added
// (and, in delta, its removals removed). A nil error accepts (ACK) and
// the client keeps the set. An error made only of *ResourceError values
// (one, or several joined with errors.Join) says the handler applied the
// rest and refused those resources, as Envoy does: the client keeps the
// previous version of each refused resource (or none, if it is new) and
// NACKs the response with every reason. Any other error refuses the
// whole response (NACK) and the previous set stays. Apply is called from
// the client's goroutine, one call at a time; it may call Watch.
type Handler interface {
	Apply(typeURL string, set map[string]*Resource) error
}

// ResourceError refuses one resource of an update whose other resources
// were applied.
type ResourceError struct {
	Name string
	Err  error
}

func (e *ResourceError) Error() string { return e.Err.Error() }

func (e *ResourceError) Unwrap() error { return e.Err }

// refusedNames returns the names err refuses when it is made only of
// *ResourceError values; ok is false for any other error.
func refusedNames(err error) (names []string, ok bool) {
	switch e := err.(type) {
	case *ResourceError:
		return []string{e.Name}, true
	case interface{ Unwrap() []error }:
		for _, sub := range e.Unwrap() {
			n, ok := refusedNames(sub)
			if !ok {
				return nil, false
			}
			names = append(names, n...)
		}
		return names, len(names) > 0
	}
	return nil, false
}

// Options configure a Client.
type Options struct {
	Node *corev3.Node
	// NodeOnEveryRequest sends the node in every state-of-the-world
	// request, not only a stream's first (Envoy's default, unless
	// set_node_on_first_message_only). Delta sends it in the first only.
	NodeOnEveryRequest bool
	// Delta selects the incremental protocol (DELTA_GRPC).
	Delta bool
	// Type, when set, makes the client a single-type one on that type's
	// own discovery service (api_config_source) instead of ADS.
	Type string
	// REST polls Type's discovery path over HTTP/1.1 instead of a gRPC
	// stream (api_type REST), every RefreshDelay (default 1 s), each poll
	// bounded by RESTTimeout (default 1 s), as Envoy's defaults.
	REST                      bool
	RefreshDelay, RESTTimeout time.Duration
	// Dial connects to the management server (a host of the static
	// cluster named by envoy_grpc.cluster_name).
	Dial    func(ctx context.Context) (net.Conn, error)
	Handler Handler
	Log     *slog.Logger
	Stats   *stats.Scope
	// Backoff bounds the wait between reconnections (defaults 500 ms and
	// 30 s, with jitter).
	BackoffBase, BackoffMax time.Duration
}

// Client is one ADS stream's client side. It keeps its subscriptions and
// accepted resources across reconnections.
type Client struct {
	o        Options
	log      *slog.Logger
	cc       *grpc.ClientConn
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once

	// applyMu makes the Handler's calls one at a time: a response's
	// (begin to finish) and a TTL expiry's.
	applyMu sync.Mutex

	mu    sync.Mutex
	types map[string]*typeState
	order []string // types in sending order (see sendRank)
	kick  chan struct{}

	connected                    *stats.Gauge
	streamsTotal, streamFailures *stats.Counter
}

// typeState is one resource type's subscription and accepted resources.
type typeState struct {
	url      string
	wildcard bool
	names    map[string]bool
	set      map[string]*Resource
	version  string // last accepted version_info (SotW)
	// Per stream:
	nonce   string          // last response's nonce
	acked   string          // the last nonce sent back (delta)
	sent    map[string]bool // delta: names the server knows we want
	pending bool            // a request is due
	nack    string          // error_detail for the due request
	first   bool            // the first request on this stream is not sent yet
	// dropped are names unsubscribed since the last request of this
	// stream: a name watched again before that request went out must be
	// unsubscribed and subscribed again, or the server, which thinks we
	// still hold it, would not send it.
	dropped map[string]bool
	// lastReason is the last refusal; nackRepeats counts it in a row. gen
	// counts responses (a delayed NACK of an older one is dropped).
	lastReason  string
	nackRepeats int
	gen         int
	// expires is when each accepted resource with a TTL runs out;
	// expiry fires at the earliest.
	expires map[string]time.Time
	expiry  *time.Timer

	attempt, success, rejected *stats.Counter
	ver                        *stats.Gauge
}

// New makes a client; nothing connects until Start.
func New(o Options) (*Client, error) {
	if o.BackoffBase == 0 {
		o.BackoffBase = 500 * time.Millisecond
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.RefreshDelay <= 0 {
		o.RefreshDelay = time.Second
	}
	if o.RESTTimeout <= 0 {
		o.RESTTimeout = time.Second
	}
	c := &Client{o: o, log: o.Log.With("component", "xds"), types: map[string]*typeState{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	cp := o.Stats.Scope("control_plane", "", "")
	c.connected = cp.Gauge("connected_state")
	c.streamsTotal = cp.Counter("streams_total")
	c.streamFailures = cp.Counter("stream_failures")
	cc, err := grpc.NewClient("passthrough:///xds",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return o.Dial(ctx) }),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)),
	)
	if err != nil {
		return nil, err
	}
	c.cc = cc
	return c, nil
}

// statPrefix is where each type's update stats live, as Envoy names them.
func statPrefix(url string) (string, string) {
	switch url {
	case ClusterType:
		return "cluster_manager", "cds"
	case ListenerType:
		return "listener_manager", "lds"
	case RouteType:
		return "xds", "rds"
	case EndpointType:
		return "xds", "eds"
	case RuntimeType:
		return "xds", "rtds"
	case ScopedRouteType:
		return "xds", "srds"
	case VirtualHostType:
		return "xds", "vhds"
	}
	return "xds", "sds"
}

// Watch sets the names subscribed for a type (the full set: names no
// longer given are unsubscribed and their resources forgotten). wildcard
// asks for every resource of the type (LDS and CDS). A change sends a
// request.
func (c *Client) Watch(url string, wildcard bool, names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.types[url]
	if ts == nil {
		a, b := statPrefix(url)
		sc := c.o.Stats.Scope(a, "", "").Scope(b, "", "")
		ts = &typeState{url: url, names: map[string]bool{}, set: map[string]*Resource{}, sent: map[string]bool{}, dropped: map[string]bool{}, expires: map[string]time.Time{}, first: true,
			attempt: sc.Counter("update_attempt"), success: sc.Counter("update_success"),
			rejected: sc.Counter("update_rejected"), ver: sc.Gauge("version")}
		c.types[url] = ts
		i := len(c.order)
		for i > 0 && sendRank(c.order[i-1]) > sendRank(url) {
			i--
		}
		c.order = slices.Insert(c.order, i, url)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	if ts.wildcard == wildcard && sameSet(ts.names, want) && !ts.first {
		return
	}
	ts.wildcard = wildcard
	ts.names = want
	if !wildcard {
		for n, r := range ts.set {
			if !wanted(url, want, r) {
				delete(ts.set, n)
			}
		}
		for n := range ts.sent {
			if !want[n] {
				ts.dropped[n] = true
			}
		}
	}
	ts.pending = true
	c.signal()
}

// Resubscribe asks again for names of url already watched (delta: they
// are sent in resource_names_subscribe once more, which asks the server
// to send them again; VHDS's on-demand hosts).
func (c *Client) Resubscribe(url string, names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.types[url]
	if ts == nil {
		return
	}
	for _, n := range names {
		if ts.names[n] {
			delete(ts.sent, n)
		}
	}
	ts.pending = true
	c.signal()
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func (c *Client) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Start runs the stream until Stop, reconnecting with backoff.
func (c *Client) Start() {
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
}

// Stop ends the stream and waits for the client's goroutines.
func (c *Client) Stop() {
	c.stopOnce.Do(func() {
		if c.cancel != nil {
			c.cancel()
			<-c.done
		}
		c.cc.Close()
	})
}

func (c *Client) run() {
	defer close(c.done)
	attempt := 0
	for c.ctx.Err() == nil {
		c.streamsTotal.Inc()
		got, err := c.stream()
		c.connected.Set(0)
		if c.ctx.Err() != nil {
			return
		}
		c.streamFailures.Inc()
		if got {
			attempt = 0
		}
		wait := backoff(c.o.BackoffBase, c.o.BackoffMax, attempt)
		attempt++
		c.log.Warn("xDS stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// backoff is exponential with full jitter in its upper half:
// base·2^attempt capped at max, then a random point in [d/2, d).
func backoff(base, max time.Duration, attempt int) time.Duration {
	d := base << min(attempt, 20)
	if d > max || d <= 0 {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

// stream runs one ADS stream; got reports whether any response arrived.
func (c *Client) stream() (got bool, err error) {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	var s session
	switch {
	case c.o.REST:
		rs, err := newRESTSession(c, ctx)
		if err != nil {
			return false, err
		}
		s = rs
	case c.o.Delta:
		st, err := c.openDelta(ctx)
		if err != nil {
			return false, err
		}
		s = &deltaSession{c: c, st: st}
	default:
		st, err := c.openSotW(ctx)
		if err != nil {
			return false, err
		}
		s = &sotwSession{c: c, st: st}
	}
	c.mu.Lock()
	for _, ts := range c.types {
		ts.nonce, ts.acked, ts.sent, ts.dropped, ts.nack, ts.first, ts.pending = "", "", map[string]bool{}, map[string]bool{}, "", true, true
		ts.gen++ // a delayed NACK from the old stream is void
	}
	c.mu.Unlock()
	c.signal()
	sendErr := make(chan error, 1)
	go func() { sendErr <- c.sendLoop(ctx, s) }()
	for {
		err := s.recv()
		if err != nil {
			cancel()
			if se := <-sendErr; se != nil && !errors.Is(se, context.Canceled) {
				err = errors.Join(err, se)
			}
			return got, err
		}
		got = true
	}
}

// sendRank orders the requests of a new stream as Envoy's warming does:
// clusters and their endpoints before the listeners and routes that use
// them, so that a reconnect never names a cluster before asking for it.
// Other types follow in the order first watched.
func sendRank(url string) int {
	switch url {
	case ClusterType:
		return 0
	case EndpointType:
		return 1
	case ListenerType:
		return 2
	case RouteType:
		return 3
	}
	return 4
}

// sendLoop sends each type's due request in sendRank order.
func (c *Client) sendLoop(ctx context.Context, s session) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.kick:
		}
		for {
			c.mu.Lock()
			var ts *typeState
			for _, url := range c.order {
				if t := c.types[url]; t.pending {
					ts = t
					break
				}
			}
			if ts == nil {
				c.mu.Unlock()
				break
			}
			ts.pending = false
			if !ts.wildcard && len(ts.names) == 0 && ts.first {
				// Nothing to ask for yet: an empty first request would
				// mean "everything" (legacy wildcard).
				c.mu.Unlock()
				continue
			}
			err := s.send(ts) // builds the request under mu, sends it after
			if err != nil {
				return err
			}
		}
	}
}

// session is one stream of either protocol.
type session interface {
	// send is called with c.mu held and must release it.
	send(ts *typeState) error
	recv() error
}

// apply runs the handler on a type's candidate set and records the
// outcome; it returns the NACK reason ("" for ACK) and, when the handler
// refused only some resources, keep: set now holds what was applied (the
// refused resources at their previous version, or absent).
func (c *Client) apply(ts *typeState, set map[string]*Resource, version string) (reason string, keep bool) {
	ts.attempt.Inc()
	err := c.o.Handler.Apply(ts.url, set)
	if err == nil {
		ts.success.Inc()
		h := fnv.New64a()
		h.Write([]byte(version))
		ts.ver.Set(int64(h.Sum64() >> 1))
		c.log.Debug("xDS update accepted", "type", shortType(ts.url), "version", version, "resources", len(set))
		return "", false
	}
	ts.rejected.Inc()
	names, keep := refusedNames(err)
	c.mu.Lock()
	for _, n := range names {
		if old := ts.set[n]; old != nil {
			set[n] = old
		} else {
			delete(set, n)
		}
	}
	c.mu.Unlock()
	if keep {
		c.log.Warn("xDS update partly rejected; the other resources apply", "type", shortType(ts.url), "version", version, "rejected", names, "err", err)
	} else {
		c.log.Warn("xDS update rejected", "type", shortType(ts.url), "version", version, "err", err)
	}
	return err.Error(), keep
}

// Version returns a type's last accepted version_info (delta: the
// system_version_info, often empty).
func (c *Client) Version(url string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts := c.types[url]; ts != nil {
		return ts.version
	}
	return ""
}

// Known returns, for a type, the accepted resources by name.
func (c *Client) Known(url string) map[string]*Resource {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]*Resource{}
	if ts := c.types[url]; ts != nil {
		for k, v := range ts.set {
			out[k] = v
		}
	}
	return out
}

// response is a response being applied, with its type's state as the
// response found it.
type response struct {
	ts       *typeState
	prev     map[string]*Resource // a copy of the accepted set
	wildcard bool
	names    map[string]bool
}

// begin starts applying a response of type url (and marks the stream
// connected); nil when the type was never requested. A response
// supersedes a refusal not yet sent. Its nonce is taken when it is
// answered (finish): a request sent while it is applied still names the
// previous one, so it cannot read as its ACK or NACK.
func (c *Client) begin(url string) *response {
	c.connected.Set(1) // before the update applies: whoever sees it sees this
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.types[url]
	if ts == nil {
		c.log.Warn("xDS response for a type never requested", "type", url)
		return nil
	}
	ts.gen++
	ts.nack = ""
	prev := make(map[string]*Resource, len(ts.set))
	for k, v := range ts.set {
		prev[k] = v
	}
	return &response{ts: ts, prev: prev, wildcard: ts.wildcard, names: ts.names}
}

// finish records a response's outcome and schedules its ACK or NACK.
// keep: the handler applied set though it refused some of its resources
// (the NACK keeps the previous version_info, as Envoy's does). A server
// that resends what we refused (go-control-plane's snapshot cache does,
// at once, in state of the world) would make a hot loop of builds and
// NACKs: the same refusal again waits, 100 ms doubling to 30 s, before
// its NACK is sent. A response that comes meanwhile supersedes it.
func (c *Client) finish(ts *typeState, nonce string, set map[string]*Resource, version, reason string, keep bool, ttls map[string]time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts.gen++
	ts.nonce = nonce
	if reason == "" || keep {
		if !ts.wildcard {
			// Names unwatched while the handler ran are gone.
			for n, r := range set {
				if !wanted(ts.url, ts.names, r) {
					delete(set, n)
				}
			}
		}
		ts.set = set
		c.renewTTLs(ts, ttls)
	}
	if reason == "" {
		ts.version = version
		ts.nack, ts.lastReason, ts.nackRepeats = "", "", 0
		ts.pending = true
		c.signal()
		return
	}
	ts.nack = reason
	if reason != ts.lastReason {
		ts.lastReason, ts.nackRepeats = reason, 0
		ts.pending = true
		c.signal()
		return
	}
	ts.nackRepeats++
	d := min(100*time.Millisecond<<min(ts.nackRepeats-1, 10), 30*time.Second)
	gen := ts.gen
	time.AfterFunc(d, func() {
		c.mu.Lock()
		if ts.gen == gen {
			ts.pending = true
		}
		c.mu.Unlock()
		c.signal()
	})
}
