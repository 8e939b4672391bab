package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/router"
)

// connManager is one downstream connection of an HTTP connection manager:
// it feeds the codec with what the connection reads and gives each decoded
// request to a worker.
type connManager struct {
	cfg      *Config
	conn     *network.Conn
	codec    protocol.ServerCodec
	idle     atomic.Pointer[time.Timer]
	lastDone atomic.Int64 // unix nanos when the last stream finished
	requests atomic.Int64
	// vars are the connection's values for header formatters, made once.
	vars router.Vars
	// scheme is the connection's: "https" over TLS, else the codecs'.
	scheme string
	// moving: held for a migration (migrate.go); the idle timeout waits.
	moving atomic.Bool
	// tunnel is the stream tunnelling the connection after a 101, for a
	// migration (tunnelmove.go).
	tunnel atomic.Pointer[tunnelCtl]
	// xfcc is this hop's x-forwarded-client-cert element (xfcc.go).
	xfccOnce sync.Once
	xfcc     []byte
}

var _ network.Handler = (*connManager)(nil)

// NewConnHandler attaches the connection manager to a new connection.
func NewConnHandler(cfg *Config, c *network.Conn) network.Handler {
	cfg.Stats.CxTotal.Inc()
	return newConnManager(cfg, c)
}

func newConnManager(cfg *Config, c *network.Conn) *connManager {
	cm := &connManager{cfg: cfg, conn: c, scheme: cfg.Codecs.Scheme}
	codecs := cfg.Codecs
	if c.Secure() {
		codecs.Scheme, cm.scheme = "https", "https"
	}
	if cm.scheme == "" {
		cm.scheme = "http"
	}
	cm.codec = cfg.Codec.NewServer(c, codecs, cm)
	cm.vars = router.Vars{RemoteAddr: c.RemoteAddr().String(), LocalAddr: c.LocalAddr().String()}
	cfg.Stats.CxActive.Inc()
	cm.lastDone.Store(time.Now().UnixNano())
	if cfg.IdleTimeout > 0 {
		cm.idle.Store(time.AfterFunc(cfg.IdleTimeout, cm.onIdle))
	}
	return cm
}

func (cm *connManager) OnRead(data []byte) int { return cm.codec.Decode(data) }

func (cm *connManager) OnEOF() { cm.codec.OnEOF() }

// OnHeadersTimeout implements protocol.HeadersTimeoutCounter.
func (cm *connManager) OnHeadersTimeout() { cm.cfg.Stats.RqHeaderTimeout.Inc() }

func (cm *connManager) OnClose(err error) {
	if t := cm.idle.Load(); t != nil {
		t.Stop()
	}
	cm.codec.OnClose(err)
	cm.cfg.Stats.CxActive.Dec()
	if !cm.conn.Migrated() { // the next process counts its end
		cm.cfg.Stats.CxDestroy.Inc()
	}
}

// Drain is called when the listener drains.
func (cm *connManager) Drain() {
	cm.cfg.Stats.CxDrainClose.Inc()
	cm.codec.Drain()
}

// OnStream runs from the reader; it never blocks: the stream is handed to
// the worker pool, which queues it when every worker is busy (the codec
// then stops reading: one waiting request per HTTP/1.1 connection).
func (cm *connManager) OnStream(ds protocol.ServerStream) {
	n := cm.requests.Add(1)
	h2 := ds.Protocol() == "HTTP/2"
	if n == 1 && !cm.cfg.RPC {
		// Counted on the first request: with codec_type AUTO the protocol
		// is known only then.
		if h2 {
			cm.cfg.Stats.CxHTTP2Total.Inc()
		} else {
			cm.cfg.Stats.CxHTTP1Total.Inc()
		}
	}
	s := newStream(cm, ds)
	s.h2 = h2
	if max := cm.cfg.MaxRequestsPerConnection; max > 0 && n >= int64(max) {
		if h2 {
			cm.codec.Drain()
		} else {
			s.closeAfter = true
		}
	}
	cm.cfg.Pool.Run(s)
}

func (cm *connManager) streamDone() {
	cm.lastDone.Store(time.Now().UnixNano())
}

// onIdle closes the connection when no stream ran for the idle timeout;
// otherwise it re-arms for the rest of the period. Requests never touch the
// timer.
func (cm *connManager) onIdle() {
	if cm.conn.Closed() {
		return
	}
	left := cm.cfg.IdleTimeout - time.Since(time.Unix(0, cm.lastDone.Load()))
	if cm.codec.Active() > 0 || left > 0 || cm.moving.Load() {
		if left <= 0 {
			left = cm.cfg.IdleTimeout
		}
		if t := cm.idle.Load(); t != nil {
			t.Reset(left)
		}
		return
	}
	cm.cfg.Stats.CxIdleTimeout.Inc()
	cm.conn.Close()
}
