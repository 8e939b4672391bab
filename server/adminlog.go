package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/admin"
	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/types/known/anypb"
)

// adminLoggers builds the admin's access logs: admin.access_log (any
// access logger, with its filters) and the deprecated
// admin.access_log_path (a file in Envoy's default format). Nil: none.
func (s *Server) adminLoggers(a *bootstrapv3.Admin) (accesslog.Loggers, error) {
	ctx := &accesslog.Context{Files: s.logs, Runtime: s.runtime}
	out, err := accesslog.Build(ctx, a.GetAccessLog())
	if err != nil {
		return nil, config.At("admin.access_log", err)
	}
	//nolint:staticcheck // deprecated in v3, still in Envoy's examples
	if p := a.GetAccessLogPath(); p != "" {
		s.log.Warn("deprecated field admin.access_log_path; Envoy's replacement is admin.access_log")
		cfg, _ := anypb.New(&filev3.FileAccessLog{Path: p})
		l, err := accesslog.Build(ctx, []*accesslogv3.AccessLog{{Name: accesslog.FileName,
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg}}})
		if err != nil {
			return nil, config.At("admin.access_log_path", err)
		}
		out = append(out, l...)
	}
	return out, nil
}

// logAdmin turns an admin request into an access log entry: an HTTP
// stream answered locally (no upstream), its body bytes each way.
func logAdmin(ls accesslog.Loggers) admin.RequestLog {
	return func(r *http.Request, resp http.Header, code int, sent int64, start time.Time) {
		d := time.Since(start)
		e := accesslog.Entry{Start: start, Duration: d, RequestDuration: d, ResponseDuration: accesslog.Unknown,
			ResponseTxDuration: accesslog.Unknown, Request: reqHeaders{r}, Response: respHeaders(resp),
			Protocol: r.Proto, ResponseCode: code, ResponseCodeDetails: "admin_filter_response",
			BytesReceived: uint64(max(r.ContentLength, 0)), BytesSent: uint64(sent), Conn: adminConn{r}}
		ls.Log(&e)
	}
}

// reqHeaders is an admin request's headers as the access log reads them:
// lowercase names, pseudo-headers included.
type reqHeaders struct{ r *http.Request }

func (h reqHeaders) Get(name string) ([]byte, bool) {
	switch name {
	case ":method":
		return []byte(h.r.Method), true
	case ":path":
		return []byte(h.r.RequestURI), true
	case ":authority":
		return []byte(h.r.Host), h.r.Host != ""
	case ":scheme":
		return []byte("http"), true
	}
	return headerValue(h.r.Header, name)
}

type respHeaders http.Header

func (h respHeaders) Get(name string) ([]byte, bool) { return headerValue(http.Header(h), name) }

func headerValue(h http.Header, name string) ([]byte, bool) {
	v := h.Values(name)
	if len(v) == 0 {
		return nil, false
	}
	return []byte(strings.Join(v, ",")), true
}

// adminConn is an admin request's connection as the log reads it.
type adminConn struct{ r *http.Request }

func (c adminConn) RemoteAddr() net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", c.r.RemoteAddr)
	if a == nil {
		return nil
	}
	return a
}

func (c adminConn) LocalAddr() net.Addr {
	a, _ := c.r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return a
}

func (adminConn) TLSState() (tls.ConnectionState, bool) { return tls.ConnectionState{}, false }
