package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// udpRcvbufErrors reads the kernel's count of UDP datagrams dropped for a
// full receive buffer (the Udp RcvbufErrors field of /proc/net/snmp, for
// the whole network namespace); -1 when it cannot be read.
func udpRcvbufErrors() int64 {
	f, err := os.Open("/proc/net/snmp")
	if err != nil {
		return -1
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(fields) {
				v, err := strconv.ParseInt(fields[i], 10, 64)
				if err != nil {
					return -1
				}
				return v
			}
		}
		return -1
	}
	return -1
}

// udpSocketDrops returns, for each local IPv4 UDP port asked for, the
// drops counter of /proc/net/udp (the last column; datagrams the kernel
// dropped on that socket), summed over the sockets bound to the port.
func udpSocketDrops(ports ...int) map[int]int64 {
	out := map[int]int64{}
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 13 {
			continue
		}
		local := fields[1] // hex address:port
		i := strings.LastIndexByte(local, ':')
		if i < 0 {
			continue
		}
		port, err := strconv.ParseInt(local[i+1:], 16, 32)
		if err != nil || !want[int(port)] {
			continue
		}
		drops, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
		if err != nil {
			continue
		}
		out[int(port)] += drops
	}
	return out
}
