// Package epoll is the epoll I/O model: reactor goroutines wait in
// epoll_wait on one-shot readiness; when a connection becomes readable, a
// goroutine from a small reader pool reads it until EAGAIN into a pooled
// buffer, hands the bytes to the connection's handler (which dispatches
// requests to the worker pool), returns the buffer as soon as the bytes are
// consumed, and re-arms the descriptor. An idle connection holds no
// goroutine and no read buffer. Listening sockets are non-blocking and
// accepted by the reactors too: Go's netpoller is not on this data path.
//
// Writes go straight from the worker with write/writev; on EAGAIN the
// writer asks the reactor for EPOLLOUT and waits for it.
//
// The model registers itself as "epoll" (network.Model). It imports
// network, internal/bufpool and x/sys/unix only.
//
//	accept ─► reactor (epoll_wait) ─► one-shot EPOLLIN ─► reader pool ─► handler.OnRead ─► worker pool
//	                 ▲                                        │ EAGAIN: re-arm
//	                 └──────────────── EPOLLOUT ◄── worker write/writev (EAGAIN)
package epoll
