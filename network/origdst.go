package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// RestoreLocalAddr makes a the connection's local address from now on:
// the address it was originally sent to, before netfilter redirected it
// here (the original_dst listener filter). Call it before the connection
// is served (its listener filters run first).
func (c *Conn) RestoreLocalAddr(a net.Addr) { c.restored = a }

// LocalAddrRestored reports whether RestoreLocalAddr was called.
func (c *Conn) LocalAddrRestored() bool { return c.restored != nil }

// RestoredLocalAddr is the restored original destination, nil when no
// listener filter restored one.
func (c *Conn) RestoredLocalAddr() net.Addr { return c.restored }

// socketController is a Socket that runs a function on its descriptor
// (epoll's, which holds its descriptor lock meanwhile).
type socketController interface {
	Control(fn func(fd int) error) error
}

// Control runs fn on the descriptor of s (a Socket of either I/O model).
func Control(s any, fn func(fd int) error) error {
	if sc, ok := s.(socketController); ok {
		return sc.Control(fn)
	}
	sc, ok := s.(syscall.Conn)
	if !ok {
		return fmt.Errorf("%T is not a socket", s)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/
// ip6_tables.h), which x/sys/unix does not name.
const ip6tSoOriginalDst = 80

// OriginalDst is the destination an accepted connection was sent to
// before an iptables REDIRECT or DNAT brought it here (SO_ORIGINAL_DST,
// IP6T_SO_ORIGINAL_DST: netfilter's conntrack entry). A connection that
// was not redirected has none: an error.
func OriginalDst(s Socket) (*net.TCPAddr, error) {
	local, ok := s.LocalAddr().(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("not a TCP socket")
	}
	var dst *net.TCPAddr
	err := Control(s, func(fd int) error {
		if local.IP.To4() != nil {
			// A sockaddr_in, read as the 16 bytes of an IPv6Mreq.
			m, err := unix.GetsockoptIPv6Mreq(fd, unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
			if err != nil {
				return err
			}
			b := m.Multiaddr[:]
			dst = &net.TCPAddr{IP: net.IPv4(b[4], b[5], b[6], b[7]), Port: int(binary.BigEndian.Uint16(b[2:4]))}
			return nil
		}
		// A sockaddr_in6, read as IPv6MTUInfo's address.
		m, err := unix.GetsockoptIPv6MTUInfo(fd, unix.IPPROTO_IPV6, ip6tSoOriginalDst)
		if err != nil {
			return err
		}
		var pb [2]byte // sin6_port, in network order in memory
		binary.NativeEndian.PutUint16(pb[:], m.Addr.Port)
		dst = &net.TCPAddr{IP: net.IP(append([]byte(nil), m.Addr.Addr[:]...)), Port: int(binary.BigEndian.Uint16(pb[:]))}
		return nil
	})
	return dst, err
}
