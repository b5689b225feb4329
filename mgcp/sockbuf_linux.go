package mgcp

import (
	"net"
	"syscall"
)

// socketBuffers reads SO_RCVBUF and SO_SNDBUF back. Linux doubles the value
// set (the extra half is its bookkeeping, socket(7)), so the halves are
// what was granted in the caller's terms.
func socketBuffers(u *net.UDPConn) (rcv, snd int, err error) {
	raw, err := u.SyscallConn()
	if err != nil {
		return -1, -1, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if rcv, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); serr != nil {
			return
		}
		snd, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	}); err != nil {
		return -1, -1, err
	}
	if serr != nil {
		return -1, -1, serr
	}
	return rcv / 2, snd / 2, nil
}
