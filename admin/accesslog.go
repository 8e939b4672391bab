package admin

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// accessLog writes one line per admin request in Envoy's default access
// log format (the fields an admin request has; upstream ones are "-"):
//
//	[2026-12-03T09:30:00.000Z] "GET /stats HTTP/1.1" 200 - 0 1234 1 - "-" "curl/8.5" "-" "127.0.0.1:9901" "-"
//
// It is what admin.access_log_path configures (deprecated in v3, still in
// Envoy's examples and go-control-plane's samples).
type accessLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	f    io.Closer
	path string // the file's path, when it was opened by path
}

// OpenAccessLog opens (creating, appending) the admin access log at path.
func OpenAccessLog(path string) (io.WriteCloser, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// SetAccessLog makes the server log each request to w (before Start). The
// server closes w when it closes.
func (s *Server) SetAccessLog(w io.WriteCloser) {
	s.access = &accessLog{w: bufio.NewWriter(w), f: w}
	next := s.srv.Handler
	s.srv.Handler = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{ResponseWriter: rw, code: http.StatusOK}
		next.ServeHTTP(cw, r)
		s.access.write(r, cw, start)
	})
}

func (l *accessLog) write(r *http.Request, cw *countingWriter, start time.Time) {
	dash := func(v string) string {
		if v == "" {
			return "-"
		}
		return strings.ReplaceAll(v, `"`, `\"`)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "[%s] \"%s %s %s\" %d - %d %d %d - \"%s\" \"%s\" \"%s\" \"%s\" \"-\"\n",
		start.UTC().Format("2006-01-02T15:04:05.000Z"), r.Method, dash(r.RequestURI), r.Proto, cw.code,
		max(r.ContentLength, 0), cw.n, time.Since(start).Milliseconds(),
		dash(r.Header.Get("X-Forwarded-For")), dash(r.UserAgent()), dash(r.Header.Get("X-Request-Id")), dash(r.Host))
	l.w.Flush()
}

// SetAccessLogPath opens path (creating, appending) as the admin access
// log; ReopenAccessLog opens it again after rotation.
func (s *Server) SetAccessLogPath(path string) error {
	f, err := OpenAccessLog(path)
	if err != nil {
		return err
	}
	s.SetAccessLog(f)
	s.access.path = path
	return nil
}

// ReopenAccessLog reopens an access log set by path (log rotation); the
// old file stays in use when the path cannot be opened.
func (s *Server) ReopenAccessLog() {
	l := s.access
	if l == nil || l.path == "" {
		return
	}
	f, err := OpenAccessLog(l.path)
	if err != nil {
		s.log.Warn("admin access log not reopened", "path", l.path, "err", err)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		f.Close() // the server closed meanwhile
		return
	}
	l.w.Flush()
	l.f.Close()
	l.w.Reset(f)
	l.f = f
}

func (l *accessLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	l.w.Flush()
	l.f.Close()
	l.f = nil
}

// countingWriter records a response's status and body size.
type countingWriter struct {
	http.ResponseWriter
	code        int
	n           int64
	wroteHeader bool
}

func (c *countingWriter) WriteHeader(code int) {
	if !c.wroteHeader {
		c.code, c.wroteHeader = code, true
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.wroteHeader = true
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// Flush passes on to the response (pprof's profile streams).
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
