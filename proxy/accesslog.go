package proxy

import (
	"strings"
	"time"

	"github.com/straitproxy/strait/accesslog"
)

// logAccess gives the finished stream to the connection manager's access
// logs. It runs on the stream's worker before the request's headers go
// back to the codec; the loggers format at once and write later.
func (s *Stream) logAccess(now time.Time) {
	e := s.logEntry
	if e == nil {
		e = new(accesslog.Entry)
		s.logEntry = e
	}
	*e = accesslog.Entry{
		Start: s.start, Duration: now.Sub(s.start),
		RequestDuration: accesslog.Unknown, ResponseDuration: accesslog.Unknown, ResponseTxDuration: accesslog.Unknown,
		Request: s.req, Protocol: s.info.Protocol,
		ResponseCodeDetails: s.details, Flags: s.info.ResponseFlags,
		BytesReceived: s.info.BytesReceived, BytesSent: s.info.BytesSent,
		UpstreamHost: s.info.UpstreamHost, UpstreamCluster: s.info.ClusterName,
		UpstreamTransportFailure: s.upFail, Attempts: s.attempt, RouteName: s.info.RouteName,
		Conn: s.cm.conn, ConnectionID: s.cm.conn.ID(),
	}
	if s.cluster != nil {
		e.UpstreamCluster = s.cluster.StatName
	}
	if s.upLocal != nil {
		e.UpstreamLocal = s.upLocal
	}
	if !s.reqAt.IsZero() {
		e.RequestDuration = s.reqAt.Sub(s.start)
	}
	if !s.respAt.IsZero() {
		e.ResponseDuration = s.respAt.Sub(s.start)
		e.ResponseTxDuration = now.Sub(s.respAt)
	}
	if s.respStarted {
		e.ResponseCode = s.status
		e.Response = &s.resp
	}
	if s.hasTrailers {
		e.Trailers = &s.trailers
	}
	if e.ResponseCodeDetails == "" {
		e.ResponseCodeDetails = s.info.ResponseCodeDetails
	}
	if info := s.cm.conn.Info(); info != nil {
		e.ServerName = info.ServerName
	}
	s.cfg.AccessLogs.Log(e)
	*e = accesslog.Entry{}
}

// detailsOf turns a reply's text into response code details' form
// ("Payload Too Large" → "payload_too_large").
func detailsOf(text string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			return r
		}
		return '_'
	}, text)
}
