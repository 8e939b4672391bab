package xds

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// Debug logging of the xDS exchange: every request (ACK, NACK or
// subscription change) and every response, with type, version, nonce and
// resource names.

// logRequest logs a request at debug level: an ACK or NACK of the
// response whose nonce it carries, or a subscription change.
func (c *Client) logRequest(url, version, nonce string, nack *status.Status, args ...any) {
	if !c.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	kind := "xDS request"
	switch {
	case nack != nil:
		kind = "xDS NACK"
		args = append(args, "reason", nack.GetMessage())
	case nonce != "":
		kind = "xDS ACK"
	}
	c.log.Debug(kind, append([]any{"type", shortType(url), "version", version, "nonce", nonce}, args...)...)
}

// logResponse logs a response at debug level with the names it carries
// (the first 20).
func (c *Client) logResponse(url, version, nonce string, names []string, removed []string) {
	if !c.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	args := []any{"type", shortType(url), "version", version, "nonce", nonce, "resources", len(names), "names", capNames(names)}
	if len(removed) > 0 {
		args = append(args, "removed", capNames(removed))
	}
	c.log.Debug("xDS response", args...)
}

func capNames(names []string) []string {
	if len(names) > 20 {
		return append(names[:20:20], fmt.Sprintf("(%d more)", len(names)-20))
	}
	return names
}

// shortType is a type URL's message name ("Cluster").
func shortType(url string) string {
	if i := strings.LastIndexByte(url, '.'); i >= 0 {
		return url[i+1:]
	}
	return url
}

// resourceNames are the names of a state-of-the-world response's
// resources, for the debug log ("?" for one that does not decode).
func resourceNames(url string, as []*anypb.Any) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		name := "?"
		if r, err := decode(url, a, "", "", 0); err == nil {
			name = r.Name
		}
		out = append(out, name)
	}
	return out
}
