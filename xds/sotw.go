package xds

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// ---- state of the world ----

type sotwSession struct {
	c  *Client
	st grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
}

func (s *sotwSession) send(ts *typeState) error {
	req := s.c.sotwRequest(ts)
	s.c.mu.Unlock()
	return s.st.Send(req)
}

// sotwRequest builds a type's next state-of-the-world request (mu held):
// its version, the nonce it answers, its names and any refusal.
func (c *Client) sotwRequest(ts *typeState) *discoveryv3.DiscoveryRequest {
	req := &discoveryv3.DiscoveryRequest{
		Node:          c.o.Node,
		TypeUrl:       ts.url,
		VersionInfo:   ts.version,
		ResponseNonce: ts.nonce,
	}
	if !ts.first && !c.o.NodeOnEveryRequest {
		req.Node = nil // only the first request of a stream carries it
	}
	ts.first = false
	if !ts.wildcard {
		names := ts.requestNames()
		req.ResourceNames = sortedNames(names)
		ts.sent = names
	}
	req.ErrorDetail = ts.takeNack()
	c.logRequest(ts.url, req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail(), "names", req.GetResourceNames())
	return req
}

// requestNames are the names the next request asks for (mu held): the
// watched names, minus those to subscribe again, which go in the request
// after (see dropped).
func (ts *typeState) requestNames() map[string]bool {
	resub := false
	for n := range ts.dropped {
		if ts.names[n] {
			resub = true
			break
		}
	}
	names := ts.names
	if resub {
		names = map[string]bool{}
		for n := range ts.names {
			if !ts.dropped[n] {
				names[n] = true
			}
		}
		ts.pending = true // the second request re-subscribes
	}
	clear(ts.dropped)
	return names
}

// takeNack returns the refusal to send with the next request, once (mu
// held); nil for an ACK.
func (ts *typeState) takeNack() *status.Status {
	if ts.nack == "" {
		return nil
	}
	st := &status.Status{Code: int32(codes.InvalidArgument), Message: ts.nack}
	ts.nack = ""
	return st
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (s *sotwSession) recv() error {
	resp, err := s.st.Recv()
	if err != nil {
		return err
	}
	s.c.applySotW(resp)
	return nil
}

// applySotW applies a state-of-the-world response (a stream's or a REST
// poll's) and schedules its ACK or NACK.
func (c *Client) applySotW(resp *discoveryv3.DiscoveryResponse) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.logResponse(resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce(), resourceNames(resp.GetTypeUrl(), resp.GetResources()), nil)
	}
	r := c.begin(resp.GetTypeUrl())
	if r == nil {
		return
	}
	ts, prev, wildcard, names := r.ts, r.prev, r.wildcard, r.names
	set := map[string]*Resource{}
	if !wildcard {
		for k, v := range prev {
			set[k] = v
		}
	}

	var reason string
	var keep bool
	seen := map[string]bool{}
	var ttls map[string]time.Duration
	beatsOnly := len(resp.GetResources()) > 0
	for i, a := range resp.GetResources() {
		r, err := decode(ts.url, a, "", resp.GetVersionInfo(), 0)
		if err != nil {
			reason = fmt.Sprintf("resources[%d]: %v", i, err)
			break
		}
		ttls = addTTL(ttls, r.Name, r.TTL)
		if r.Message == nil {
			// A TTL heartbeat: the resource stands as it is.
			if old := prev[r.Name]; old != nil && !seen[r.Name] {
				set[r.Name] = old
			}
			seen[r.Name] = true
			continue
		}
		beatsOnly = false
		if seen[r.Name] {
			reason = fmt.Sprintf("resources[%d]: duplicate resource name %q", i, r.Name)
			break
		}
		seen[r.Name] = true
		if !wildcard && !names[r.Name] {
			continue // not (or no longer) subscribed
		}
		if old := prev[r.Name]; old != nil && old.TTL == r.TTL && proto.Equal(old.Message, r.Message) {
			r = old // unchanged: keeps its version and time
		}
		set[r.Name] = r
	}
	switch {
	case reason == "" && beatsOnly:
		// Heartbeats alone only renew TTLs: the rest of a complete set
		// (LDS, CDS) is not in such a response and stands (as Envoy
		// does).
		set = prev
	case reason == "":
		reason, keep = c.apply(ts, set, resp.GetVersionInfo())
	}
	c.finish(ts, resp.GetNonce(), set, resp.GetVersionInfo(), reason, keep, ttls)
}
