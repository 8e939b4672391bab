package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/internal/bufpool"
	"github.com/straitproxy/strait/network"
)

// resumedTunnel is a tunnel the previous process migrated: a plain
// two-way copy between the downstream connection and the upstream one
// handed over with it. The downstream's reader writes to the upstream
// (a slow upstream stops the reads); a goroutine copies the other way.
// It counts as one of the connection manager's connections and writes
// the upgrade request's access log line when it ends.
type resumedTunnel struct {
	cfg  *Config
	down *network.Conn
	up   handedConn
	st   tunnelState
	// cluster is the cluster's name in stats and logs.
	cluster string
	rx, tx  atomic.Uint64 // bytes since the migration
	half    atomic.Int32  // directions ended
	move    atomic.Pointer[tunnelMove]
	moved   atomic.Bool
	once    sync.Once
}

// handedConn is an upstream connection a hot restart can hand over
// (upstream.Host.Adopt's).
type handedConn interface {
	net.Conn
	File() (*os.File, error)
	Release() error
	CloseWrite() error
}

var _ network.Migrator = (*resumedTunnel)(nil)

// ResumeConnHandler serves a connection the previous process migrated:
// an idle HTTP/1.1 connection (its next request comes here; it was
// counted there), or a tunnel (h.State says so) that goes on as a two-way
// copy.
func ResumeConnHandler(cfg *Config, c *network.Conn, h *network.Handoff) (network.Handler, error) {
	if len(h.State) == 0 {
		if len(h.Pending) > 0 || len(h.Files) > 0 {
			return nil, fmt.Errorf("http_connection_manager: only idle connections and tunnels move")
		}
		if !cfg.Codec.Resumes {
			return nil, fmt.Errorf("http_connection_manager: codec %s cannot resume an idle connection", cfg.Codec.Name)
		}
		cm := newConnManager(cfg, c)
		cm.requests.Store(1) // its protocol was counted too
		return cm, nil
	}
	var st tunnelState
	if err := json.Unmarshal(h.State, &st); err != nil || st.Kind != kindTunnel {
		return nil, fmt.Errorf("http_connection_manager: migrated state %q: %v", h.State, err)
	}
	if len(h.Files) != 1 {
		return nil, fmt.Errorf("http_connection_manager: %d upstream sockets handed over with a tunnel", len(h.Files))
	}
	cl, ok := cfg.Clusters.Get(st.Cluster)
	if !ok {
		return nil, fmt.Errorf("http_connection_manager: cluster %q of a migrated tunnel is not configured", st.Cluster)
	}
	host := cl.Host(st.Host)
	if host == nil {
		return nil, fmt.Errorf("http_connection_manager: host %s of a migrated tunnel is not in cluster %q", st.Host, st.Cluster)
	}
	nc, err := host.Adopt(h.Files[0])
	if err != nil {
		return nil, err
	}
	up, ok := nc.(handedConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("http_connection_manager: %T cannot carry a tunnel", nc)
	}
	t := &resumedTunnel{cfg: cfg, down: c, up: up, st: st, cluster: cl.StatName}
	if len(h.Pending) > 0 {
		// Taken over from here whatever happens: a write that failed
		// (part of it may have gone) ends the tunnel, as it would have
		// in the previous process, rather than send its bytes twice.
		up.SetWriteDeadline(time.Now().Add(pendingWriteWait))
		if _, err := up.Write(h.Pending); err != nil {
			up.Close() // copyUp's read fails: the tunnel ends
		} else {
			t.rx.Add(uint64(len(h.Pending)))
		}
		up.SetWriteDeadline(time.Time{})
	}
	cfg.Stats.CxActive.Inc()
	go t.copyUp()
	return t, nil
}

// pendingWriteWait bounds the write of a migrated tunnel's pending bytes
// (the previous process waits for the answer).
const pendingWriteWait = 2 * time.Second

// copyUp moves upstream bytes to the downstream until the upstream ends.
func (t *resumedTunnel) copyUp() {
	bp := bufpool.Get(bufpool.Large)
	defer bufpool.Put(bp)
	buf := *bp
	for {
		n, err := t.up.Read(buf)
		if n > 0 {
			if _, werr := t.down.Write(buf[:n]); werr != nil {
				t.end()
				return
			}
			t.tx.Add(uint64(n))
		}
		switch {
		case err == nil:
		case isTimeout(err): // only a migration sets a deadline here
			if halt(&t.move) {
				return
			}
		case errors.Is(err, io.EOF):
			t.down.CloseWrite()
			t.doneOne()
			return
		default:
			t.end()
			return
		}
	}
}

// OnRead writes downstream bytes to the upstream.
func (t *resumedTunnel) OnRead(data []byte) int {
	if _, err := t.up.Write(data); err != nil {
		t.end()
		return len(data)
	}
	t.rx.Add(uint64(len(data)))
	return len(data)
}

// OnEOF half-closes towards the upstream.
func (t *resumedTunnel) OnEOF() {
	t.up.CloseWrite()
	t.doneOne()
}

func (t *resumedTunnel) doneOne() {
	if t.half.Add(1) == 2 {
		t.end()
	}
}

func (t *resumedTunnel) OnClose(error) {
	t.cfg.Stats.CxActive.Dec()
	t.end()
}

// end closes both sides once (only this process's descriptors when the
// tunnel moved on) and logs the tunnel.
func (t *resumedTunnel) end() {
	t.once.Do(func() {
		t.down.Close()
		if t.moved.Load() {
			return
		}
		t.up.Close()
		t.cfg.Stats.CxDestroy.Inc()
		if t.cfg.AccessLogs != nil {
			t.log()
		}
	})
}

// log writes the upgrade request's access log line, as the stream would
// have in the process the tunnel began in.
func (t *resumedTunnel) log() {
	start := time.Unix(0, t.st.Start)
	e := &accesslog.Entry{
		Start: start, Duration: time.Since(start),
		RequestDuration: accesslog.Unknown, ResponseDuration: accesslog.Unknown, ResponseTxDuration: accesslog.Unknown,
		Request: headersOf(t.st.Request), Response: headersOf(t.st.Response), ResponseCode: 101,
		Protocol: t.st.Protocol, ResponseCodeDetails: "via_upstream", RouteName: t.st.Route,
		BytesReceived: t.st.Received + t.rx.Load(), BytesSent: t.st.Sent + t.tx.Load(),
		UpstreamHost: t.st.Host, UpstreamCluster: t.cluster, UpstreamLocal: t.up.LocalAddr(), Attempts: t.st.Attempts,
		Conn: t.down, ConnectionID: t.down.ID(),
	}
	if info := t.down.Info(); info != nil {
		e.ServerName = info.ServerName
	}
	t.cfg.AccessLogs.Log(e)
}

// Migrate implements network.Migrator: the tunnel moves on to the next
// process. The downstream's reader writes what it reads before it reads
// again, so holding it stops that direction; the upstream copy is cut
// short by a read deadline.
func (t *resumedTunnel) Migrate(wait time.Duration) (*network.Handoff, error) {
	if t.half.Load() != 0 || t.down.Closed() || !t.down.Detachable() {
		return nil, errBusy
	}
	end := time.Now().Add(wait)
	// The downstream's reader first, while the upstream copy goes on
	// (an upstream that answers as it reads needs its answers read to
	// go on reading); then the upstream copy.
	d, err := t.down.Detach(time.Until(end), nil)
	if err != nil {
		return nil, err
	}
	m := newTunnelMove()
	t.move.Store(m)
	resume := func() {
		t.up.SetReadDeadline(time.Time{})
		t.move.Store(nil)
		close(m.decided)
	}
	t.up.SetReadDeadline(aLongTimeAgo)
	if !m.await(1, end) || t.half.Load() != 0 {
		d.Abort()
		resume()
		return nil, fmt.Errorf("%w: the tunnel did not stop", errBusy)
	}
	uf, err := t.up.File()
	if err != nil {
		d.Abort()
		resume()
		return nil, err
	}
	st := t.st
	st.Received += t.rx.Load()
	st.Sent += t.tx.Load()
	state, _ := json.Marshal(&st)
	return &network.Handoff{Filter: FilterName, Conn: d.File, Files: []*os.File{uf}, Pending: d.Pending, State: state,
		Commit: func() {
			uf.Close()
			t.moved.Store(true)
			t.up.Release()
			d.Commit() // OnClose follows: no log line here, the next process writes it
			m.commit = true
			close(m.decided)
		},
		Abort: func() {
			uf.Close()
			d.Abort()
			resume()
		},
	}, nil
}
