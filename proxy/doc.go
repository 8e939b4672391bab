// Package proxy is the L7 stream engine: the per-connection manager that
// feeds a server codec and hands each decoded request to a worker, and the
// per-request Stream that runs the named phases of docs/life-of-a-request.md:
// decode headers, request filters, route, choose cluster and host, get a
// connection, send, receive the response, response filters, respond,
// finish. Retries and timeouts live here; errors are mapped to local
// replies in exactly one function (replyFor).
//
// proxy imports filter, router, upstream, protocol, network and stats;
// never an extension.
package proxy
