package server

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/straitproxy/strait/network"
)

// The upgrade coordinator: hot restart, as Envoy's --restart-epoch.
//
// Each process of a hot-restart family (--base-id B) listens on a unix
// socket named for its epoch, strait-B-EPOCH.sock in the socket
// directory. The next epoch connects to it before it builds anything and
// asks for
//
//   - "sockets": the listening sockets (the admin's included), sent
//     with SCM_RIGHTS and named by the address each is configured with;
//     the new process serves them instead of binding (network.Inherit),
//     so the ports never close and no connection is refused;
//   - "stats": the counters, which the new process adds to its own, and
//     when the family's first process started (uptime_all_epochs);
//   - "drain", once the new process serves (its initial configuration
//     is in): the old process closes its admin listener, drains as on
//     SIGTERM and exits. While it
//     drains it keeps sending "stats" (every statsPushInterval, and a
//     last one marked Final once every connection is closed), so the
//     requests it still answers are counted in the new process too.
//
// A new process that fails before "drain" (a bad config, a crash) leaves
// the old one as it was: the sockets it received were duplicates.
//
// Messages are a 4-byte big-endian length and a JSON object, each way.

// UpgradeSocket is the socket path of epoch's process in base's family.
func UpgradeSocket(dir string, base, epoch int) string {
	return filepath.Join(dir, fmt.Sprintf("strait-%d-%d.sock", base, epoch))
}

type upgradeMsg struct {
	Type string `json:"type"`
	// sockets: the configured addresses, one per passed descriptor; More
	// says another message follows (a message carries at most
	// maxFDsPerMsg descriptors).
	Addrs []string `json:"addrs,omitempty"`
	More  bool     `json:"more,omitempty"`
	// stats
	Counters  map[string]uint64 `json:"counters,omitempty"`
	FirstUp   int64             `json:"first_up_unix_nano,omitempty"`
	Error     string            `json:"error,omitempty"`
	ParentPID int               `json:"pid,omitempty"`
	// conn: a migrated connection (its sockets are the descriptors);
	// the answer has Error when the new process did not take it.
	Conn *connMsg `json:"conn,omitempty"`
	// Final: the draining process's last stats; it exits next. Conns:
	// the connections it still has.
	Final bool `json:"final,omitempty"`
	Conns int  `json:"connections,omitempty"`
}

// connMsg is a migrated connection: the listener it came through (by
// configured address), what that listener's filters learned, and the
// handler's part for the filter that resumes it.
type connMsg struct {
	Addr    string            `json:"addr"`
	Filter  string            `json:"filter"`
	Info    *network.ConnInfo `json:"info,omitempty"`
	Pending []byte            `json:"pending,omitempty"`
	State   json.RawMessage   `json:"state,omitempty"`
}

// migrateWait bounds how long one connection is held for its migration.
const migrateWait = time.Second

// statsPushInterval is how often a draining process sends its counters.
const statsPushInterval = 250 * time.Millisecond

const maxFDsPerMsg = 200 // Linux allows 253 per message

func writeMsg(c *net.UnixConn, m *upgradeMsg, fds []int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	// The header carries the descriptors; the body follows with Write,
	// which loops over short writes (a large stats reply).
	head := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(head, oob, nil)
	if err == nil && (n != len(head) || oobn != len(oob)) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}

func readMsg(c *net.UnixConn) (*upgradeMsg, []*os.File, error) {
	head := make([]byte, 4)
	oob := make([]byte, syscall.CmsgSpace(4*maxFDsPerMsg))
	n, oobn, _, _, err := c.ReadMsgUnix(head, oob)
	if err != nil {
		return nil, nil, err
	}
	var files []*os.File
	if oobn > 0 {
		cmsgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, nil, err
		}
		for _, cm := range cmsgs {
			fds, err := syscall.ParseUnixRights(&cm)
			if err != nil {
				return nil, nil, err
			}
			for _, fd := range fds {
				syscall.CloseOnExec(fd)
				files = append(files, os.NewFile(uintptr(fd), "inherited"))
			}
		}
	}
	if n < 4 {
		if _, err := io.ReadFull(c, head[n:]); err != nil {
			closeAll(files)
			return nil, nil, err
		}
	}
	size := binary.BigEndian.Uint32(head)
	if size > 64<<20 {
		closeAll(files)
		return nil, nil, fmt.Errorf("upgrade message of %d bytes", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(c, body); err != nil {
		closeAll(files)
		return nil, nil, err
	}
	var m upgradeMsg
	if err := json.Unmarshal(body, &m); err != nil {
		closeAll(files)
		return nil, nil, err
	}
	return &m, files, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// ServeUpgrades listens on path for the next epoch (see above). It
// replaces a stale socket file; the socket is private to this user.
func (s *Server) ServeUpgrades(path string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return fmt.Errorf("hot restart socket %s is in use by another process of this --base-id", path)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("hot restart socket: %w", err)
	}
	os.Chmod(path, 0o600)
	s.upgradeLn.Store(ln)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			go s.serveUpgrade(c)
		}
	}()
	return nil
}

// serveUpgrade answers one next-epoch process.
func (s *Server) serveUpgrade(c *net.UnixConn) {
	defer c.Close()
	for {
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		m, files, err := readMsg(c)
		closeAll(files)
		if err != nil {
			return
		}
		switch m.Type {
		case "sockets":
			err = s.sendSockets(c)
		case "stats":
			err = writeMsg(c, &upgradeMsg{Type: "stats", Counters: s.store.Counters(), FirstUp: s.firstUp.Load(),
				ParentPID: os.Getpid()}, nil)
		case "drain":
			s.log.Info("hot restart: the next epoch serves; draining")
			if !s.handingOff.CompareAndSwap(false, true) {
				err = writeMsg(c, &upgradeMsg{Type: m.Type, Error: "already draining for a next epoch"}, nil)
				break
			}
			if err = writeMsg(c, &upgradeMsg{Type: "drain"}, nil); err != nil {
				close(s.migrated)
				close(s.handedOff)
				return
			}
			if s.admin != nil {
				go s.admin.Close() // the next epoch's admin has the port
			}
			s.Quit()
			if s.stopping.Load() {
				close(s.migrated) // shutting down already: nothing is held
			} else {
				s.migrateConns(c)
			}
			s.pushStats(c)
			return
		default:
			err = writeMsg(c, &upgradeMsg{Type: m.Type, Error: "unknown request"}, nil)
		}
		if err != nil {
			return
		}
	}
}

// migrateConns moves each connection that can move to the next
// process, one at a time: held (network.Migrator), sent, and let go here
// once the next process serves it (Commit), or served on here (Abort).
// Connections that cannot move drain here as on SIGTERM.
func (s *Server) migrateConns(c *net.UnixConn) {
	defer close(s.migrated)
	moved, kept := 0, 0
	for _, l := range s.allListeners() {
		// New connections go to the next process from now on.
		if _, port, _ := net.SplitHostPort(l.ConfiguredAddress()); port != "0" {
			l.StopAccepting()
		}
	}
	for _, l := range s.allListeners() {
		addr := l.ConfiguredAddress()
		if _, port, _ := net.SplitHostPort(addr); port == "0" {
			continue // the next process does not have this listener
		}
		for conn, m := range l.Migrators() {
			h, err := m.Migrate(migrateWait)
			if err != nil {
				kept++
				continue
			}
			sent, err := s.sendConn(c, &connMsg{Addr: addr, Filter: h.Filter, Info: conn.Info(), Pending: h.Pending, State: h.State},
				append([]*os.File{h.Conn}, h.Files...))
			var refused *refusedError
			switch {
			case err == nil:
				h.Commit()
				moved++
				continue
			case errors.As(err, &refused):
				h.Abort() // the next process serves it nowhere
				kept++
				s.log.Info("hot restart: the next epoch did not take a connection", "err", err)
				continue
			case sent:
				// The next process may serve it already: this one must
				// not read it too. Let go without a FIN (if that process
				// is gone, so is the connection).
				h.Commit()
			default:
				h.Abort()
				kept++
			}
			s.log.Warn("hot restart: connection migration stopped", "err", err)
			s.log.Info("hot restart: connections migrated", "moved", moved, "kept", kept)
			return
		}
	}
	s.log.Info("hot restart: connections migrated", "moved", moved, "kept", kept)
}

// refusedError is the next process's answer that it did not take a
// connection (it serves it nowhere: the old process goes on with it).
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// sendConn sends one migrated connection and waits for the answer; sent
// says the descriptors went (the next process may serve them).
func (s *Server) sendConn(c *net.UnixConn, m *connMsg, files []*os.File) (sent bool, err error) {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := writeMsg(c, &upgradeMsg{Type: "conn", Conn: m}, fds); err != nil {
		return false, err
	}
	reply, got, err := readMsg(c)
	closeAll(got)
	if err != nil {
		return true, err
	}
	if reply.Error != "" {
		return true, &refusedError{reply.Error}
	}
	return true, nil
}

// adoptConn serves a connection the previous epoch migrated, on the
// listener configured with its address.
func (s *Server) adoptConn(m *connMsg, files []*os.File) error {
	if m == nil || len(files) == 0 {
		return errors.New("a migrated connection without its socket")
	}
	for _, l := range s.allListeners() {
		if l.ConfiguredAddress() != m.Addr || l.Draining() {
			continue
		}
		return l.Adopt(files[0], m.Info, &network.Handoff{Filter: m.Filter, Files: files[1:], Pending: m.Pending, State: m.State})
	}
	return fmt.Errorf("no listener at %s", m.Addr)
}

// pushStats sends the counters while this process drains, and a last
// time once closeAll is done; Shutdown waits (a little) for that one.
func (s *Server) pushStats(c *net.UnixConn) {
	defer close(s.handedOff)
	tick := time.NewTicker(statsPushInterval)
	defer tick.Stop()
	for {
		final := false
		select {
		case <-tick.C:
		case <-s.closed:
			final = true
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		m := &upgradeMsg{Type: "stats", Counters: s.store.Counters(), Final: final}
		if !final {
			m.Conns = s.activeConns()
		}
		if writeMsg(c, m, nil) != nil || final {
			return
		}
	}
}

// sendSockets sends every bound listening socket with the address its
// listener is configured with (listeners on port 0 are left out: the
// next process binds its own).
func (s *Server) sendSockets(c *net.UnixConn) error {
	var addrs []string
	var files []*os.File
	defer func() { closeAll(files) }()
	fixed := func(addr string) bool {
		_, port, _ := net.SplitHostPort(addr)
		return port != "0"
	}
	for _, l := range s.allListeners() {
		addr := l.ConfiguredAddress()
		if !fixed(addr) || l.Draining() {
			continue
		}
		f, err := l.ListenFile()
		if err != nil {
			continue // not bound (warming), or closed meanwhile
		}
		addrs, files = append(addrs, addr), append(files, f)
	}
	// The admin's socket too: the next process's admin serves it, and
	// this one's stops at "drain".
	if s.admin != nil && s.adminAddr != "" && fixed(s.adminAddr) {
		if f, err := s.admin.ListenFile(); err == nil {
			addrs, files = append(addrs, s.adminAddr), append(files, f)
		}
	}
	for {
		n := min(len(addrs), maxFDsPerMsg)
		fds := make([]int, n)
		for i := range fds {
			fds[i] = int(files[i].Fd())
		}
		if err := writeMsg(c, &upgradeMsg{Type: "sockets", Addrs: addrs[:n], More: n < len(addrs)}, fds); err != nil {
			return err
		}
		closeAll(files[:n])
		addrs, files = addrs[n:], files[n:]
		if len(addrs) == 0 {
			return nil
		}
	}
}

// Parent is the previous epoch's process, as the new one talks to it.
type Parent struct {
	c    *net.UnixConn
	last map[string]uint64 // the counters last taken
}

// ConnectParent connects to the previous epoch's socket.
func ConnectParent(path string) (*Parent, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("hot restart: no parent at %s: %w", path, err)
	}
	return &Parent{c: c}, nil
}

func (p *Parent) ask(typ string) (*upgradeMsg, []*os.File, error) {
	p.c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := writeMsg(p.c, &upgradeMsg{Type: typ}, nil); err != nil {
		return nil, nil, err
	}
	m, files, err := readMsg(p.c)
	if err == nil && m.Error != "" {
		closeAll(files)
		return nil, nil, errors.New(m.Error)
	}
	return m, files, err
}

// Sockets takes the parent's listening sockets and keeps them for the
// listeners this process starts (network.Inherit); it returns how many.
func (p *Parent) Sockets() (int, error) {
	m, files, err := p.ask("sockets")
	n := 0
	for err == nil {
		if len(files) != len(m.Addrs) {
			closeAll(files)
			return n, fmt.Errorf("hot restart: %d sockets for %d addresses", len(files), len(m.Addrs))
		}
		for i, f := range files {
			network.Inherit(m.Addrs[i], f)
			n++
		}
		if !m.More {
			return n, nil
		}
		m, files, err = readMsg(p.c)
	}
	return n, err
}

// Stats returns the parent's counters and when the family's first
// process started.
func (p *Parent) Stats() (map[string]uint64, time.Time, error) {
	m, files, err := p.ask("stats")
	closeAll(files)
	if err != nil {
		return nil, time.Time{}, err
	}
	p.last = m.Counters
	if m.FirstUp == 0 {
		return m.Counters, time.Time{}, nil
	}
	return m.Counters, time.Unix(0, m.FirstUp), nil
}

// Follow tells the parent to drain and exit, then follows it: until its
// last stats or its exit, s serves the connections the parent migrates
// and takes what the parent counted since the snapshot before (Stats,
// or the previous one) and how many connections it still has.
func (p *Parent) Follow(s *Server) error {
	_, files, err := p.ask("drain")
	closeAll(files)
	if err != nil {
		return err
	}
	for {
		// Generous: each connection that cannot move holds the parent
		// up to migrateWait, and nothing comes meanwhile.
		p.c.SetDeadline(time.Now().Add(10 * time.Minute))
		m, files, err := readMsg(p.c)
		if err != nil {
			s.ParentDraining(nil, 0)
			if errors.Is(err, io.EOF) {
				return nil // exited between two pushes
			}
			return err
		}
		if m.Type == "conn" {
			err := s.adoptConn(m.Conn, files)
			closeAll(files)
			reply := &upgradeMsg{Type: "conn"}
			if err != nil {
				reply.Error = err.Error()
			}
			if err := writeMsg(p.c, reply, nil); err != nil {
				return err
			}
			continue
		}
		closeAll(files)
		if m.Type != "stats" {
			continue
		}
		s.ParentDraining(p.delta(m.Counters), m.Conns)
		if m.Final {
			return nil
		}
	}
}

// delta returns what grew since the last snapshot and keeps this one; a
// counter lower than before was reset (/reset_counters) and counted v
// since.
func (p *Parent) delta(now map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for name, v := range now {
		switch last := p.last[name]; {
		case v > last:
			d[name] = v - last
		case v < last:
			d[name] = v
		}
	}
	p.last = now
	return d
}

// Close ends the conversation.
func (p *Parent) Close() error { return p.c.Close() }
