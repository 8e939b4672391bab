package accesslog

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Sink takes finished lines. Write copies the line and never blocks on
// I/O: a line that does not fit the sink's buffer is dropped and
// counted.
type Sink interface {
	Write(line []byte)
}

// Defaults of a File: lines wait at most flushInterval (Envoy's
// file_flush_interval default) or until flushSize bytes are pending;
// at most maxPending bytes wait, beyond which lines are dropped.
const (
	defaultFlushInterval = time.Second
	flushSize            = 64 << 10
	maxPending           = 4 << 20
)

// Counter and Gauge are what the Manager counts with (the stats
// package's, which sits beside this one).
type (
	Counter interface{ Add(uint64) }
	Gauge   interface{ Add(int64) }
)

// Stats are the Manager's counters: Envoy's filesystem.* ones
// (write_buffered counts lines), plus filesystem.lines_dropped.
type Stats struct {
	WriteBuffered, WriteCompleted, WriteFailed, FlushedByTimer, ReopenFailed, LinesDropped Counter
	// TotalBuffered is the bytes being written.
	TotalBuffered Gauge
}

// StatNames are the names of Stats' fields under "filesystem.", in
// field order.
var StatNames = [...]string{"write_buffered", "write_completed", "write_failed", "flushed_by_timer",
	"reopen_failed", "lines_dropped", "write_total_buffered"}

// Manager owns the access log files of a process: one File per path,
// shared by every logger that names it (across config updates), each
// with a goroutine that writes its lines.
type Manager struct {
	mu       sync.Mutex
	files    map[string]*File
	interval time.Duration
	closed   bool
	st       Stats
}

// NewManager makes a Manager; flushInterval 0 is Envoy's 1 s. A nil
// counter in st is not counted.
func NewManager(st Stats, flushInterval time.Duration) *Manager {
	if flushInterval <= 0 {
		flushInterval = defaultFlushInterval
	}
	for _, c := range []*Counter{&st.WriteBuffered, &st.WriteCompleted, &st.WriteFailed, &st.FlushedByTimer,
		&st.ReopenFailed, &st.LinesDropped} {
		if *c == nil {
			*c = nopCounter{}
		}
	}
	if st.TotalBuffered == nil {
		st.TotalBuffered = nopGauge{}
	}
	return &Manager{files: map[string]*File{}, interval: flushInterval, st: st}
}

type (
	nopCounter struct{}
	nopGauge   struct{}
)

func (nopCounter) Add(uint64) {}
func (nopGauge) Add(int64)    {}

// Open returns the File for path, opening it (append, create 0644) on
// first use.
func (m *Manager) Open(path string) (*File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("access logs are closed")
	}
	if f, ok := m.files[path]; ok {
		return f, nil
	}
	var fd *os.File
	var err error
	switch path {
	case "/dev/stdout":
		fd = os.Stdout
	case "/dev/stderr":
		fd = os.Stderr
	default:
		if fd, err = openLog(path); err != nil {
			return nil, err
		}
	}
	f := &File{m: m, path: path, std: fd == os.Stdout || fd == os.Stderr,
		wake: make(chan struct{}, 1), reopen: make(chan request), done: make(chan struct{})}
	f.fd.Store(fd)
	m.files[path] = f
	go f.run()
	return f, nil
}

func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// Reopen makes every file write what it holds, close, and open its path
// again (log rotation: SIGUSR1, POST /reopen_logs). It returns once
// each file has done so, or after timeout.
func (m *Manager) Reopen(timeout time.Duration) { m.each(timeout, true) }

// Flush makes every file write what it holds and returns once written
// (or after timeout).
func (m *Manager) Flush(timeout time.Duration) { m.each(timeout, false) }

// each asks every file's goroutine to flush (and reopen), waiting for
// each in turn.
func (m *Manager) each(timeout time.Duration, reopen bool) {
	m.mu.Lock()
	files := make([]*File, 0, len(m.files))
	for _, f := range m.files {
		files = append(files, f)
	}
	m.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, f := range files {
		ack := make(chan struct{})
		select {
		case f.reopen <- request{ack, reopen}:
		case <-f.done:
			continue
		case <-deadline.C:
			return
		}
		select {
		case <-ack:
		case <-deadline.C:
			return
		}
	}
}

// Close writes what is pending and closes every file; loggers built
// on it drop their lines from then on.
func (m *Manager) Close() {
	m.mu.Lock()
	files := m.files
	m.files, m.closed = map[string]*File{}, true
	m.mu.Unlock()
	for _, f := range files {
		f.mu.Lock()
		f.closed = true
		f.mu.Unlock()
		close(f.stop())
	}
	for _, f := range files {
		select {
		case <-f.done:
			continue
		case <-time.After(time.Second):
		}
		// A write that does not finish: closing the file ends it when it
		// is a pipe nobody reads; a hung disk, or a stdout pipe we do not
		// close, may hold it longer. Shutdown does not wait for that: the
		// goroutine is left to the write.
		if !f.std {
			f.fd.Load().Close()
		}
		select {
		case <-f.done:
		case <-time.After(time.Second):
		}
	}
}

// request asks a file's goroutine to flush, and to reopen.
type request struct {
	ack    chan struct{}
	reopen bool
}

// File is one access log file: lines gather in a buffer that its
// goroutine writes out.
type File struct {
	m    *Manager
	path string
	std  bool

	mu      sync.Mutex
	pending []byte
	lines   uint64 // in pending
	closed  bool

	fd     atomic.Pointer[os.File]
	spare  []byte
	wake   chan struct{}
	reopen chan request
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func (f *File) stop() chan struct{} {
	f.once.Do(func() { f.quit = make(chan struct{}) })
	return f.quit
}

// Write queues a line.
func (f *File) Write(line []byte) {
	f.mu.Lock()
	if f.closed || len(f.pending)+len(line) > maxPending {
		f.mu.Unlock()
		f.m.st.LinesDropped.Add(1)
		return
	}
	f.pending = append(f.pending, line...)
	f.lines++
	n := len(f.pending)
	f.mu.Unlock()
	// (Counters are the writer goroutine's: a line costs one uncontended
	// append under the lock, no shared counter.)
	if n >= flushSize && n-len(line) < flushSize {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

func (f *File) run() {
	defer close(f.done)
	t := time.NewTicker(f.m.interval)
	defer t.Stop()
	quit := f.stop()
	for {
		select {
		case <-f.wake:
			f.flush()
		case <-t.C:
			if f.flush() {
				f.m.st.FlushedByTimer.Add(1)
			}
		case r := <-f.reopen:
			f.flush()
			if r.reopen {
				f.reopenFile()
			}
			close(r.ack)
		case <-quit:
			f.flush()
			if !f.std {
				f.fd.Load().Close()
			}
			return
		}
	}
}

// flush writes the pending lines; it reports whether there were any.
func (f *File) flush() bool {
	f.mu.Lock()
	buf, lines := f.pending, f.lines
	f.pending, f.lines = f.spare[:0], 0
	f.mu.Unlock()
	f.spare = buf
	if len(buf) == 0 {
		return false
	}
	f.m.st.WriteBuffered.Add(lines)
	f.m.st.TotalBuffered.Add(int64(len(buf)))
	defer f.m.st.TotalBuffered.Add(-int64(len(buf)))
	if _, err := f.fd.Load().Write(buf); err != nil {
		f.m.st.WriteFailed.Add(1)
	} else {
		f.m.st.WriteCompleted.Add(1)
	}
	if cap(f.spare) > 4*flushSize {
		f.spare = nil // a burst's buffer is not kept
	}
	return true
}

// reopenFile opens the path again; the old file stays in use when that
// fails.
func (f *File) reopenFile() {
	if f.std {
		return
	}
	fd, err := openLog(f.path)
	if err != nil {
		f.m.st.ReopenFailed.Add(1)
		return
	}
	f.fd.Swap(fd).Close()
}
