// Package network owns sockets: Conn (a socket, its read buffer, pause and
// resume of reading, close events), the I/O models that drive reads (netpoll
// here; the epoll reactor plugs in behind the same IOModel interface) and
// the bounded worker pool that runs requests.
//
// Goroutine model: one reader per connection delivers bytes to the
// connection's Handler (the network filter chain); a handler that needs to
// do blocking work (a request) runs it on Pool; the worker also writes the
// answer with Conn.Write. There is no write goroutine.
//
// network imports only internal packages; it knows nothing of protocols.
package network
