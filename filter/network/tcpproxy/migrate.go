package tcpproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/network"
)

// Connection migration (hot restart): a session moves to the next
// process whole, its downstream and upstream sockets with it. Both
// directions stop between two writes (the downstream's reader is held,
// the upstream copy is cut short by a read deadline), so every byte
// read on one side was written to the other and what neither side read
// yet waits in the kernel's buffers, which travel with the sockets.
// TLS on either side, a half-closed session or one still connecting
// does not move: it finishes here.

// migrated is what the next process needs to go on.
type migrated struct {
	Cluster  string `json:"cluster"`
	Host     string `json:"host"`
	Start    int64  `json:"start_unix_nano"`
	Attempts int    `json:"attempts"`
}

var _ network.Migrator = (*session)(nil)
var _ filter.NetworkAdopter = (*Factory)(nil)

// errNotNow: the session cannot move at this moment.
var errNotNow = errors.New("tcp_proxy: the session cannot move now")

// upFile is an upstream connection that can be handed over
// (upstream.Host.Dial's).
type upFile interface {
	File() (*os.File, error)
	Release() error
	SetReadDeadline(time.Time) error
}

// Migrate implements network.Migrator.
func (s *session) Migrate(wait time.Duration) (*network.Handoff, error) {
	select {
	case <-s.connected:
	default:
		return nil, errNotNow // still connecting
	}
	up, ok := s.up.(upFile)
	if !ok || s.halfDone.Load() != 0 || s.down.Closed() {
		return nil, errNotNow
	}
	end := time.Now().Add(wait)
	// The idle timer must not close the session while it is held.
	s.mu.Lock()
	if s.timer != nil && !s.timer.Stop() {
		s.mu.Unlock()
		return nil, errNotNow // it is closing
	}
	stopped := make(chan struct{})
	s.copyStopped = stopped
	s.mu.Unlock()
	up.SetReadDeadline(time.Unix(1, 0))
	// resume undoes the hold; copyUp takes a timeout it was not asked
	// to stop for as a spurious wake-up and reads on.
	resume := func() (copyRuns bool) {
		up.SetReadDeadline(time.Time{})
		s.mu.Lock()
		copyRuns = s.copyStopped != nil
		s.copyStopped = nil
		if s.timer != nil {
			s.timer.Reset(s.cfg.idleTimeout)
		}
		s.mu.Unlock()
		return copyRuns
	}
	select {
	case <-stopped:
	case <-time.After(time.Until(end)):
		if !resume() {
			go s.copyUp() // it stopped just now
		}
		return nil, fmt.Errorf("%w: the upstream copy did not stop", errNotNow)
	}
	// copyUp has returned; from here an abort restarts it.
	restart := func() {
		resume()
		go s.copyUp()
	}
	d, err := s.down.Detach(time.Until(end), nil)
	if err != nil {
		restart()
		return nil, err
	}
	uf, err := up.File()
	if err != nil {
		d.Abort()
		restart()
		return nil, err
	}
	state, _ := json.Marshal(&migrated{Cluster: s.cluster, Host: s.host, Start: s.started().UnixNano(), Attempts: s.attempts})
	return &network.Handoff{
		Filter: Name, Conn: d.File, Files: []*os.File{uf}, Pending: d.Pending, State: state,
		Commit: func() {
			uf.Close()
			s.moved.Store(true)
			up.Release()
			d.Commit() // OnClose follows: no log line here, the next process writes it
		},
		Abort: func() {
			uf.Close()
			d.Abort()
			restart()
		},
	}, nil
}

// started is when the session began: its connection's start, or the
// start in the process it migrated from.
func (s *session) started() time.Time {
	if !s.start.IsZero() {
		return s.start
	}
	return s.down.Start()
}

// Adopt implements filter.NetworkAdopter: the session goes on with the
// upstream connection handed over (h.Files[0]), to the same host of the
// same cluster; pending downstream bytes are written to it first.
func (f *Factory) Adopt(c *network.Conn, h *network.Handoff) (network.Handler, error) {
	if h.Filter != Name {
		return nil, fmt.Errorf("tcp_proxy: cannot resume a connection of %s", h.Filter)
	}
	var st migrated
	if err := json.Unmarshal(h.State, &st); err != nil {
		return nil, fmt.Errorf("tcp_proxy: migrated state: %w", err)
	}
	if len(h.Files) != 1 {
		return nil, fmt.Errorf("tcp_proxy: %d upstream sockets handed over", len(h.Files))
	}
	cl, ok := f.cfg.bc.Clusters.Get(st.Cluster)
	if !ok {
		return nil, fmt.Errorf("tcp_proxy: cluster %q of a migrated session is not configured", st.Cluster)
	}
	host := cl.Host(st.Host)
	if host == nil {
		return nil, fmt.Errorf("tcp_proxy: host %s of a migrated session is not in cluster %q", st.Host, st.Cluster)
	}
	up, err := host.Adopt(h.Files[0])
	if err != nil {
		return nil, err
	}
	if len(h.Pending) > 0 {
		if _, err := up.Write(h.Pending); err != nil {
			up.Close()
			return nil, err
		}
		f.cfg.stats.RxBytes.Add(uint64(len(h.Pending)))
	}
	s := &session{cfg: f.cfg, down: c, up: up, connected: make(chan struct{}),
		cluster: st.Cluster, clusterStat: cl.StatName, host: st.Host, attempts: st.Attempts}
	close(s.connected)
	s.start = time.Unix(0, st.Start)
	if f.cfg.logs != nil {
		s.upLocal = up.LocalAddr()
	}
	s.touch()
	f.cfg.stats.CxActive.Inc()
	if f.cfg.idleTimeout > 0 {
		s.timer = time.AfterFunc(f.cfg.idleTimeout, s.onIdle)
	}
	go s.copyUp()
	return s, nil
}

// migrationWake sorts a read timeout in copyUp (only Migrate sets a
// read deadline on the upstream): stop, when a migration waits for the
// copy to stop (it returns, leaving both sockets be); else a migration
// gave up meanwhile and the copy reads on.
func (s *session) migrationWake(err error) (isWake, stop bool) {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.copyStopped == nil {
		return true, false
	}
	close(s.copyStopped)
	s.copyStopped = nil
	return true, true
}
