package admin

import (
	"crypto/tls"
	"errors"
	"fmt"
	"golang.org/x/net/netutil"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/mgsip/mgsip/internal/config"
)

// Listen opens the API's listener as the admin section says: TCP, TCP
// with TLS (tls_cert, tls_key), or a unix socket with the file mode of
// socket_mode.
func Listen(a config.Admin) (net.Listener, error) {
	ln, err := listen(a)
	if err != nil {
		return nil, err
	}
	// A bound on open connections: a client that opens them without end
	// (or a flood) must not use up the process's file descriptors, which
	// the MGCP and SIP sockets need too.
	return netutil.LimitListener(ln, MaxConnections), nil
}

// MaxConnections bounds the admin API's open connections.
const MaxConnections = 256

func listen(a config.Admin) (net.Listener, error) {
	if path, ok := a.UnixSocket(); ok {
		return listenUnix(path, a.Mode)
	}
	ln, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return nil, err
	}
	if a.TLSCert == "" {
		return ln, nil
	}
	cert, err := tls.LoadX509KeyPair(a.TLSCert, a.TLSKey)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("tls_cert/tls_key: %w", err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
}

// listenUnix creates the socket under a temporary name, sets its mode and
// renames it into place, so that it is never reachable with a wider mode
// (the umask is the whole process's and cannot be changed for one file).
// A stale socket left by a crash is replaced; a live one, or a file that
// is not a socket, is an error.
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if mode == 0 {
		mode = 0o600
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("%s: another process is serving on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket: %w", err)
		}
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"."+strconv.Itoa(os.Getpid()))
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ln, path: path}, nil
}

// unixListener removes its socket file when closed.
type unixListener struct {
	*net.UnixListener
	path string
	once sync.Once
}

func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	})
	return err
}
