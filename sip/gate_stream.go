package sip

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"strings"
)

// listenerGate is a TCP or TLS listener seen through the gate. A
// stranger's connection is closed as soon as it is accepted (before the
// TLS handshake): answering it would take a goroutine to read it, which is
// what the gate is there to save. A peer's connection is framed into
// messages that pass the gate one by one.
type listenerGate struct {
	net.Listener
	g   *gate
	tap func(out bool, local, remote net.Addr, msg []byte)
}

func (l *listenerGate) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := addrPortOf(c.RemoteAddr())
		if l.g.allow != nil && !l.g.allow(src) {
			l.g.stats.refused.Add(1)
			l.g.stats.dropped.Add(1)
			l.g.stats.strangerDropped.Add(1)
			_ = c.Close()
			continue
		}
		return &streamGate{Conn: c, g: l.g, rbuf: make([]byte, 16<<10), tap: l.tap}, nil
	}
}

// maxStreamHeader bounds the header of one message on a stream; beyond
// it the connection is closed (there is no boundary to resync on).
const maxStreamHeader = 64 << 10

var errStreamFraming = errors.New("sip: cannot frame message on stream")

// streamGate reads whole messages from a peer's stream connection and
// hands sipgo those the gate passes; stateless answers go back on the
// connection.
type streamGate struct {
	net.Conn
	g    *gate
	in   []byte // read, not framed yet
	out  []byte // passed, not returned to sipgo yet
	rbuf []byte
	err  error // read error, returned once in is used up
	tap  func(out bool, local, remote net.Addr, msg []byte)
}

// Write passes what sipgo sends (one message a write) to the tap.
func (c *streamGate) Write(p []byte) (int, error) {
	if c.tap != nil && len(p) > 4 {
		c.tap(true, c.Conn.LocalAddr(), c.Conn.RemoteAddr(), p)
	}
	return c.Conn.Write(p)
}

func (c *streamGate) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		msg, n, err := frame(c.in)
		if err != nil {
			return 0, err
		}
		if msg != nil {
			if c.tap != nil && len(msg) > 4 { // not the keep-alive CRLFs
				c.tap(false, c.Conn.LocalAddr(), c.Conn.RemoteAddr(), msg)
			}
			src := addrPortOf(c.Conn.RemoteAddr())
			pass, res, _ := c.g.inspect(msg, src)
			if res != nil {
				if _, err := c.Conn.Write([]byte(res.String())); err != nil {
					return 0, err
				}
			}
			if pass {
				c.out = append(c.out[:0], msg...)
			}
			c.in = append(c.in[:0], c.in[n:]...)
			continue
		}
		if c.err != nil {
			return 0, c.err
		}
		m, err := c.Conn.Read(c.rbuf)
		c.in = append(c.in, c.rbuf[:m]...)
		if err != nil {
			c.err = err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// frame returns the first message of b (or its leading keep-alive CRLFs,
// RFC 5626 §3.5.1) and its length; nil if b holds no whole message yet.
func frame(b []byte) ([]byte, int, error) {
	if len(b) == 0 {
		return nil, 0, nil
	}
	if b[0] == '\r' || b[0] == '\n' {
		i := 0
		for i < len(b) && i < 4 && (b[i] == '\r' || b[i] == '\n') {
			i++
		}
		return b[:i], i, nil
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > maxStreamHeader {
			return nil, 0, errStreamFraming
		}
		return nil, 0, nil
	}
	end += 4
	length := 0
	for _, line := range bytes.Split(b[:end-4], []byte("\r\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(string(name))) {
		case "content-length", "l":
			n, err := strconv.Atoi(strings.TrimSpace(string(value)))
			if err != nil || n < 0 || n > 1<<20 {
				return nil, 0, errStreamFraming
			}
			length = n
		}
	}
	if len(b) < end+length {
		return nil, 0, nil
	}
	return b[:end+length], end + length, nil
}
