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
	// Final: the draining process's last stats; it exits next. Conns:
	// the connections it still has.
	Final bool `json:"final,omitempty"`
	Conns int  `json:"connections,omitempty"`
}

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
			if err = writeMsg(c, &upgradeMsg{Type: "drain"}, nil); err == nil {
				if s.admin != nil {
					go s.admin.Close() // the next epoch's admin has the port
				}
				s.handingOff.Store(true)
				s.Quit()
				s.pushStats(c)
				return
			}
		default:
			err = writeMsg(c, &upgradeMsg{Type: m.Type, Error: "unknown request"}, nil)
		}
		if err != nil {
			return
		}
	}
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

// Drain tells the parent to drain and exit. Then, until the parent's
// last stats or its exit, add is called with what the parent counted
// since the snapshot before (Stats, or the previous call), and how many
// connections it still has.
func (p *Parent) Drain(add func(counters map[string]uint64, conns int)) error {
	_, files, err := p.ask("drain")
	closeAll(files)
	if err != nil {
		return err
	}
	for {
		p.c.SetDeadline(time.Now().Add(10 * statsPushInterval))
		m, files, err := readMsg(p.c)
		closeAll(files)
		if err != nil {
			add(nil, 0)
			if errors.Is(err, io.EOF) {
				return nil // exited between two pushes
			}
			return err
		}
		if m.Type != "stats" {
			continue
		}
		add(p.delta(m.Counters), m.Conns)
		if m.Final {
			return nil
		}
	}
}

// delta returns what grew since the last snapshot and keeps this one.
func (p *Parent) delta(now map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for name, v := range now {
		if last := p.last[name]; v > last {
			d[name] = v - last
		}
	}
	p.last = now
	return d
}

// Close ends the conversation.
func (p *Parent) Close() error { return p.c.Close() }
