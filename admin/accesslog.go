package admin

import (
	"net/http"
	"time"
)

// RequestLog hears of each admin request once it was answered: the
// request, the response's headers, status and body bytes, and when it
// began. The server turns it into access log entries (admin.access_log,
// admin.access_log_path).
type RequestLog func(r *http.Request, resp http.Header, code int, sent int64, start time.Time)

// SetRequestLog makes the server report each request to log (before
// Start).
func (s *Server) SetRequestLog(log RequestLog) {
	next := s.srv.Handler
	s.srv.Handler = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{ResponseWriter: rw, code: http.StatusOK}
		next.ServeHTTP(cw, r)
		log(r, rw.Header(), cw.code, cw.n, start)
	})
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
