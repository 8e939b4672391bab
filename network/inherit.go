package network

import (
	"os"
	"sync"
)

// Inherited listening sockets: a hot restart hands the new process the
// old one's listening sockets (server/upgrade.go), which it keeps here,
// by the address a listener is configured with, until a listener of
// either I/O model asks for that address: Listen then serves the
// inherited socket instead of binding, so the port never closes and no
// connection is refused in between.
var (
	inheritMu sync.Mutex
	inherited = map[string]*os.File{}
)

// Inherit keeps f, a listening TCP socket, for the listener configured
// with addr ("127.0.0.1:10000").
func Inherit(addr string, f *os.File) {
	inheritMu.Lock()
	defer inheritMu.Unlock()
	if old := inherited[addr]; old != nil {
		old.Close()
	}
	inherited[addr] = f
}

// TakeInherited returns (and forgets) the socket inherited for addr.
func TakeInherited(addr string) (*os.File, bool) {
	inheritMu.Lock()
	defer inheritMu.Unlock()
	f, ok := inherited[addr]
	delete(inherited, addr)
	return f, ok
}

// HasInherited reports whether a socket is inherited for addr (a
// listener to be added there can serve it: nothing to bind).
func HasInherited(addr string) bool {
	inheritMu.Lock()
	defer inheritMu.Unlock()
	return inherited[addr] != nil
}

// DropInherited closes the inherited sockets no listener took (the new
// configuration no longer has those addresses); it returns how many.
func DropInherited() int {
	inheritMu.Lock()
	defer inheritMu.Unlock()
	n := len(inherited)
	for addr, f := range inherited {
		f.Close()
		delete(inherited, addr)
	}
	return n
}

// FileAcceptor is an Acceptor that can hand out its listening socket (a
// duplicate: closing either leaves the other open).
type FileAcceptor interface {
	Acceptor
	File() (*os.File, error)
}
