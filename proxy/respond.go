package proxy

import (
	"errors"
	"io"
	"time"

	"github.com/straitproxy/strait/accesslog"
	"github.com/straitproxy/strait/protocol"
	"github.com/straitproxy/strait/upstream"
)

// Relaying the response downstream, through the encoders.

// filterResponseData passes a piece of response body (and at its end the
// trailers) through the encoders; false: a buffering encoder passed the
// buffer limit.
func (s *Stream) filterResponseData(data []byte, err error) ([]byte, bool) {
	t := s.us.Trailers()
	end := err == io.EOF && t == nil
	out, ok := s.encodeData(data, end, false)
	if ok && err == io.EOF && t != nil {
		var rest []byte
		if rest, ok = s.encodeData(nil, false, true); ok && len(rest) > 0 {
			out = append(out[:len(out):len(out)], rest...)
		}
		if ok {
			s.encodeTrailers(t)
		}
	}
	return out, ok
}

// errFilterReplied ends an attempt whose request a data filter answered.
var errFilterReplied = errors.New("a filter answered the request")

// errEncodeBuffer ends a response an encoder buffered past the limit.
var errEncodeBuffer = errors.New("response buffer limit exceeded")

// respond relays the response: headers, then body as it arrives.
func (s *Stream) respond() {
	resp := &s.resp
	cl := s.cluster
	s.status = resp.StatusCode()
	s.details = "via_upstream"
	if s.cfg.RPC {
		s.exception = resp.Has(protocol.RPCException)
	}
	cl.Stats.CountStatus(s.status)
	s.upstreamServiceTime(resp)
	s.route.ApplyResponseHeaders(resp, s.req, s.varsFor())
	if s.encN > 0 {
		s.encodeHeaders(resp, s.us.EndStream())
		if r := s.fx.replace; r != nil {
			// An encoder replaced the upstream's answer.
			s.fx.replace = nil
			s.endAttempt(false)
			s.closeAfter = true
			s.fx.edit = r.edit
			s.encN = 0 // the reply is the encoders' own
			s.localReply(r.status, r.body, false)
			s.fx.edit = nil
			return
		}
	}
	s.finalizeResponseHeaders(resp)
	if s.upgrade && s.status == 101 {
		s.tunnel()
		return
	}
	end := s.us.EndStream()
	s.respStarted = true
	if !end {
		s.holdIfMore(s.ds, s.us) // the body at hand: one write for both
	}
	err := s.ds.WriteHeaders(resp, end)
	if err == nil && !end {
		err = s.relayBody()
	}
	s.endAttempt(err == nil)
	if err != nil {
		if s.flags == 0 {
			// Not the upstream's doing (countBodyFailure flags that): the
			// client stopped taking the response.
			s.flags |= accesslog.DownstreamConnectionTermination
			s.details = "downstream_remote_disconnect"
		}
		s.resetDownstream()
	}
}

func (s *Stream) relayBody() error {
	timed := !s.deadline.IsZero() || s.streamIdle() > 0 || s.perTryIdle() > 0
	for {
		if timed {
			s.us.SetDeadline(s.bodyDeadline())
		}
		data, err := s.us.ReadData()
		if s.anyEncData && (len(data) > 0 || err == io.EOF) {
			var ok bool
			if data, ok = s.filterResponseData(data, err); !ok {
				return errEncodeBuffer
			}
		}
		if len(data) > 0 {
			last := err == io.EOF && s.us.Trailers() == nil
			if !last {
				s.holdIfMore(s.ds, s.us) // more (or the trailers) at hand
			}
			var werr error
			if s.respRate > 0 {
				werr = s.writePaced(data, last)
			} else {
				werr = s.ds.WriteData(data, last)
			}
			if werr == nil {
				s.info.BytesSent += uint64(len(data))
			}
			if werr != nil || last {
				return werr
			}
		}
		if err == io.EOF {
			if t := s.us.Trailers(); t != nil {
				if s.cfg.AccessLogs != nil || s.span != nil {
					s.trailers.CopyFrom(t)
					s.hasTrailers = true
				}
				return s.ds.WriteTrailers(t)
			}
			return s.ds.WriteData(nil, true)
		}
		if err != nil {
			s.countBodyFailure(err)
			return err
		}
	}
}

// countBodyFailure counts a timeout, or an upstream reset, that cut a
// response under way.
func (s *Stream) countBodyFailure(err error) {
	switch classify(err, false).Kind {
	case KindReset, KindResetBeforeHeaders, KindMalformed:
		s.try.Failed(upstream.FailReset)
		s.cluster.Stats.RqRxReset.Inc()
		s.flags |= accesslog.UpstreamRemoteReset
		s.details = "upstream_reset_after_response_started{remote_reset}"
		return
	case KindTimeout:
	default:
		return
	}
	switch s.timer {
	case timerStreamIdle:
		s.cfg.Stats.RqIdleTimeout.Inc()
		s.flags |= accesslog.StreamIdleTimeout
		s.details = "stream_idle_timeout"
	case timerMaxDuration:
		s.cfg.Stats.RqMaxDurationReached.Inc()
		s.flags |= accesslog.DurationTimeout
		s.details = "max_duration_timeout"
	case timerPerTryIdle:
		s.try.Failed(upstream.FailTimeout)
		s.cluster.Stats.RqPerTryIdleTimeout.Inc()
		s.flags |= accesslog.UpstreamRequestTimeout
		s.details = "upstream_response_timeout"
	case timerRoute:
		s.try.Failed(upstream.FailTimeout)
		s.cluster.Stats.RqTimeout.Inc()
		s.cfg.Stats.RqTimeout.Inc()
		s.flags |= accesslog.UpstreamRequestTimeout
		s.details = "upstream_response_timeout"
	}
}

// writePaced writes a piece of the response body at s.respRate bytes per
// second: in sixteenths of a second's worth, each when the bucket holds
// it (as Envoy's stream rate limiter fills 16 times a second). The wait
// ends early when the client leaves.
func (s *Stream) writePaced(data []byte, end bool) error {
	if s.pace == nil {
		s.pace = &pacer{at: time.Now(), tokens: float64(s.respRate) / 16}
	}
	p := s.pace
	chunk := max(1, int(s.respRate/16))
	for len(data) > 0 {
		n := min(len(data), chunk)
		now := time.Now()
		p.tokens = min(float64(s.respRate)/16, p.tokens+now.Sub(p.at).Seconds()*float64(s.respRate))
		p.at = now
		if short := float64(n) - p.tokens; short > 0 {
			if !s.sleepUnlessGone(time.Duration(short / float64(s.respRate) * float64(time.Second))) {
				return protocol.ErrDownstreamReset
			}
			continue
		}
		p.tokens -= float64(n)
		if err := s.ds.WriteData(data[:n], end && n == len(data)); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// pacer is writePaced's bucket.
type pacer struct {
	tokens float64
	at     time.Time
}

// sleepUnlessGone waits d, or less when the client leaves; it reports
// whether the client is still there.
func (s *Stream) sleepUnlessGone(d time.Duration) bool {
	for d > 0 && !s.gone.Load() {
		step := min(d, 50*time.Millisecond)
		time.Sleep(step)
		d -= step
	}
	return !s.gone.Load()
}
