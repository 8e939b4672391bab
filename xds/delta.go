package xds

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// ---- delta ----

type deltaSession struct {
	c  *Client
	st grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	// acks are the nonces to acknowledge per type, in arrival order.
}

func (s *deltaSession) send(ts *typeState) error {
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: ts.url, ResponseNonce: ts.nonce}
	if ts.first {
		req.Node = s.c.o.Node
		// A new stream: say what we hold, so the server sends only what
		// changed since.
		if len(ts.set) > 0 {
			req.InitialResourceVersions = map[string]string{}
			for n, r := range ts.set {
				if r.Message != nil || r.TTL > 0 {
					req.InitialResourceVersions[n] = r.Version
				}
			}
		}
		ts.first = false
		ts.nonce = ""
		req.ResponseNonce = ""
	}
	if !ts.wildcard {
		names := ts.requestNames()
		for n := range names {
			if !ts.sent[n] {
				req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
				ts.sent[n] = true
			}
		}
		for n := range ts.sent {
			if !names[n] {
				req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
				delete(ts.sent, n)
			}
		}
		sort.Strings(req.ResourceNamesSubscribe)
		sort.Strings(req.ResourceNamesUnsubscribe)
	}
	req.ErrorDetail = ts.takeNack()
	// A change of subscriptions goes in a request of its own, without a
	// nonce (a "spontaneous" request): one that rides on an ACK whose
	// nonce the server already superseded is dropped whole as stale by
	// servers such as Istio's pilot, and the new names with it. The
	// ACK (or NACK), when one is due, goes first on its own.
	var ack *discoveryv3.DeltaDiscoveryRequest
	changes := len(req.ResourceNamesSubscribe) > 0 || len(req.ResourceNamesUnsubscribe) > 0
	if changes && req.ResponseNonce != "" {
		if req.ResponseNonce != ts.acked || req.ErrorDetail != nil {
			ack = &discoveryv3.DeltaDiscoveryRequest{TypeUrl: ts.url, ResponseNonce: req.ResponseNonce, ErrorDetail: req.ErrorDetail}
		}
		req.ResponseNonce, req.ErrorDetail = "", nil
	}
	if ack != nil {
		ts.acked = ack.ResponseNonce
		s.c.logRequest(ts.url, "", ack.GetResponseNonce(), ack.GetErrorDetail(), "subscribe", []string(nil),
			"unsubscribe", []string(nil), "initial_versions", 0)
	} else if req.ResponseNonce != "" {
		ts.acked = req.ResponseNonce
	}
	s.c.logRequest(ts.url, "", req.GetResponseNonce(), req.GetErrorDetail(), "subscribe", req.GetResourceNamesSubscribe(),
		"unsubscribe", req.GetResourceNamesUnsubscribe(), "initial_versions", len(req.GetInitialResourceVersions()))
	s.c.mu.Unlock()
	if ack != nil {
		if err := s.st.Send(ack); err != nil {
			return err
		}
	}
	return s.st.Send(req)
}

func (s *deltaSession) recv() error {
	resp, err := s.st.Recv()
	if err != nil {
		return err
	}
	c := s.c
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		var names []string
		for _, r := range resp.GetResources() {
			names = append(names, r.GetName())
		}
		c.logResponse(resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce(), names, resp.GetRemovedResources())
	}
	r := c.begin(resp.GetTypeUrl())
	if r == nil {
		return nil
	}
	ts, set, wildcard, names := r.ts, r.prev, r.wildcard, r.names

	var reason string
	var keep bool
	seen := map[string]bool{}
	var ttls map[string]time.Duration
	beatsOnly := len(resp.GetResources()) > 0 && len(resp.GetRemovedResources()) == 0
	for i, dr := range resp.GetResources() {
		if dr.GetResource() == nil {
			switch {
			case dr.GetTtl() == nil && Namespaced(ts.url) && dr.GetName() != "":
				// The server's answer for a name it does not know:
				// kept, without a Message, for whoever asked (VHDS).
				m := &Resource{Name: dr.GetName(), Version: dr.GetVersion(), Aliases: dr.GetAliases(), Updated: time.Now()}
				if wildcard || wanted(ts.url, names, m) {
					set[m.Name] = m
				}
				beatsOnly = false
			case dr.GetTtl() == nil:
				// A resource that the server says does not exist.
				delete(set, dr.GetName())
				beatsOnly = false
			default:
				ttls = addTTL(ttls, dr.GetName(), dr.GetTtl().AsDuration()) // a TTL heartbeat: keep what we have
			}
			continue
		}
		beatsOnly = false
		r, err := decode(ts.url, dr.GetResource(), dr.GetName(), dr.GetVersion(), dr.GetTtl().AsDuration())
		if err != nil {
			reason = fmt.Sprintf("resources[%d]: %v", i, err)
			break
		}
		r.Aliases = dr.GetAliases()
		ttls = addTTL(ttls, r.Name, r.TTL)
		if seen[r.Name] {
			reason = fmt.Sprintf("resources[%d]: duplicate resource name %q", i, r.Name)
			break
		}
		seen[r.Name] = true
		if !wildcard && !wanted(ts.url, names, r) {
			continue
		}
		set[r.Name] = r
	}
	for _, n := range resp.GetRemovedResources() {
		if seen[n] && reason == "" {
			reason = fmt.Sprintf("removed_resources: %q is also in resources", n)
		}
		delete(set, n)
	}
	if reason == "" && !beatsOnly {
		reason, keep = c.apply(ts, set, resp.GetSystemVersionInfo())
	}
	c.finish(ts, resp.GetNonce(), set, resp.GetSystemVersionInfo(), reason, keep, ttls)
	return nil
}
