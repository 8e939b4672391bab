// Package tcpproxy is the envoy.filters.network.tcp_proxy network filter:
// it connects each downstream connection to a host of a cluster and moves
// bytes both ways, half-closes included. It must not import other
// extensions.
package tcpproxy

import (
	"cmp"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/upstream"
)

// Factory is a built tcp_proxy.
type Factory struct{ cfg *Config }

var _ filter.NetworkFactory = (*Factory)(nil)

// Terminal: the proxy consumes the connection.
func (*Factory) Terminal() bool { return true }

// NewHandler pauses the downstream until the upstream connects, which
// happens when the connection starts (OnStart).
func (f *Factory) NewHandler(c *network.Conn, _ network.Handler) (network.Handler, error) {
	s := &session{cfg: f.cfg, down: c, connected: make(chan struct{})}
	s.touch()
	f.cfg.stats.CxTotal.Inc()
	f.cfg.stats.CxActive.Inc()
	c.PauseRead()
	return s, nil
}

// OnStart dials the upstream once the filters before tcp_proxy let the
// connection start (network.Starter): a connection a filter refused
// (a rate limit, an abort on accept) never reaches the upstream, as in
// Envoy. A session lives as long as its connection: it dials on a
// goroutine of its own, not on one of the request workers.
func (s *session) OnStart() { go s.connect() }

// session is one proxied connection. The downstream reader writes to the
// upstream (blocking: a slow upstream stops the reads); a goroutine copies
// the upstream to the downstream.
type session struct {
	cfg       *Config
	down      *network.Conn
	up        net.Conn
	connected chan struct{}
	last      atomic.Int64
	mu        sync.Mutex // guards timer and copyStopped
	timer     *time.Timer
	// copyStopped: a migration waits for copyUp to stop (migrate.go);
	// moved: the session went to the next process.
	copyStopped chan struct{}
	moved       atomic.Bool
	closeOnce   sync.Once
	halfDone    atomic.Int32 // directions finished; 2 closes both
	failed      atomic.Bool  // connect gave up (its fields are final)
	idled       atomic.Bool  // the idle timeout closed the session

	// For access logs: when a migrated session began in the process
	// before (zero: the connection's start), the upstream chosen, and
	// the response flags (written by connect before connected closes).
	start         time.Time
	cluster, host string
	clusterStat   string // the cluster's alt_stat_name, else its name
	upLocal       net.Addr
	flags         accesslog.Flags
	upFail        string
	attempts      int
}

func (s *session) touch() { s.last.Store(time.Now().UnixNano()) }

func (s *session) connect() {
	cfg := s.cfg
	var err error
	for attempt := 0; attempt < cfg.attempts; attempt++ {
		s.attempts = attempt + 1
		name := cfg.pickCluster(rand.Uint64())
		cl, ok := cfg.bc.Clusters.Get(name)
		if !ok {
			cfg.stats.CxNoRoute.Inc()
			s.flags |= accesslog.NoClusterFound
			err = errors.New("no cluster")
			break
		}
		s.cluster, s.clusterStat = name, cl.StatName
		h := cl.Pick(&upstream.PickHint{Random: rand.Uint64(), Local: s.down.RestoredLocalAddr()})
		if h == nil {
			cfg.stats.CxNoRoute.Inc()
			s.flags |= accesslog.NoHealthyUpstream
			err = errors.New("no healthy upstream")
			break
		}
		s.host = h.Addr
		if s.up, err = h.Dial(s.down.Context()); err == nil {
			h.ReportConnect(true)
			break
		}
		if ce := (*upstream.ConnectError)(nil); errors.As(err, &ce) && s.down.Context().Err() == nil { // not an overflow, not the client leaving
			h.ReportConnect(false)
		}
		cfg.stats.ConnectFail.Inc()
		s.flags |= accesslog.UpstreamConnectionFailure
		s.upFail = err.Error()
	}
	if err != nil {
		if s.flags&accesslog.UpstreamConnectionFailure != 0 && s.attempts == cfg.attempts {
			s.flags |= accesslog.UpstreamRetryLimitExceeded
		}
		s.failed.Store(true)
		s.down.Close()
		return
	}
	if cfg.logs != nil {
		s.upLocal = s.up.LocalAddr()
	}
	// The idle timer before connected closes: a migration, which waits
	// for connected, finds it to stop.
	if cfg.idleTimeout > 0 {
		s.mu.Lock()
		s.timer = time.AfterFunc(cfg.idleTimeout, s.onIdle)
		s.mu.Unlock()
	}
	close(s.connected)
	if s.down.Closed() {
		s.up.Close() // the client left while we dialled
		s.mu.Lock()
		if s.timer != nil {
			s.timer.Stop()
		}
		s.mu.Unlock()
		return
	}
	s.down.ResumeRead()
	s.copyUp()
}

// copyUp moves upstream bytes to the downstream until the upstream ends.
func (s *session) copyUp() {
	bp := bufpool.Get(bufpool.Large)
	defer bufpool.Put(bp)
	buf := *bp
	for {
		n, err := s.up.Read(buf)
		if n > 0 {
			s.touch()
			if _, werr := s.down.Write(buf[:n]); werr != nil {
				s.close()
				return
			}
			s.cfg.stats.TxBytes.Add(uint64(n))
		}
		if err != nil {
			if wake, stop := s.migrationWake(err); wake {
				if stop {
					return
				}
				continue
			}
			if errors.Is(err, io.EOF) {
				s.down.CloseWrite()
				s.doneOne()
			} else {
				s.close()
			}
			return
		}
	}
}

// OnRead writes downstream bytes to the upstream.
func (s *session) OnRead(data []byte) int {
	s.touch()
	if _, err := s.up.Write(data); err != nil {
		s.close()
		return len(data)
	}
	s.cfg.stats.RxBytes.Add(uint64(len(data)))
	return len(data)
}

// OnEOF half-closes towards the upstream.
func (s *session) OnEOF() {
	if cw, ok := s.up.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	s.doneOne()
}

func (s *session) doneOne() {
	if s.halfDone.Add(1) == 2 {
		s.close()
	}
}

func (s *session) OnClose(error) {
	s.cfg.stats.CxActive.Dec()
	s.close()
}

func (s *session) close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		if s.timer != nil {
			s.timer.Stop()
		}
		s.mu.Unlock()
		s.down.Close()
		if s.moved.Load() {
			return // the next process serves it, and logs it
		}
		connected := false
		select {
		case <-s.connected:
			s.up.Close()
			connected = true
		default:
		}
		if s.cfg.logs != nil {
			s.log(connected || s.failed.Load())
		}
	})
}

// log writes the session's access log entry as it closes. What connect
// wrote is read only once it is over (connected, or failed); a session
// closed while it dials logs without it.
func (s *session) log(settled bool) {
	e := &accesslog.Entry{
		Start: s.started(), Duration: time.Since(s.started()),
		RequestDuration: accesslog.Unknown, ResponseDuration: accesslog.Unknown, ResponseTxDuration: accesslog.Unknown,
		BytesReceived: s.down.BytesRead(), BytesSent: s.down.BytesWritten(),
		Conn: s.down, ConnectionID: s.down.ID(),
	}
	if settled {
		e.UpstreamCluster, e.UpstreamHost, e.UpstreamLocal = cmp.Or(s.clusterStat, s.cluster), s.host, s.upLocal
		e.Flags, e.UpstreamTransportFailure, e.Attempts = s.flags, s.upFail, s.attempts
	}
	if info := s.down.Info(); info != nil {
		e.ServerName = info.ServerName
	}
	e.TerminationDetails = s.down.TerminationDetails()
	if s.idled.Load() && e.TerminationDetails == "" {
		e.TerminationDetails = "idle_timeout"
	}
	s.cfg.logs.Log(e)
}

func (s *session) onIdle() {
	left := s.cfg.idleTimeout - time.Since(time.Unix(0, s.last.Load()))
	if left > 0 {
		s.mu.Lock()
		s.timer.Reset(left)
		s.mu.Unlock()
		return
	}
	s.cfg.stats.IdleTimeout.Inc()
	s.idled.Store(true)
	s.close()
}
