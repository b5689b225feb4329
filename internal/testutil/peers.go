package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The real programs of ../shared/docs/peers.md, started by tests. Each
// gets an address of its own in 127/8 (some bind fixed ports whatever
// their configuration says) and is stopped by its PID.

// LoopbackIP returns a random address in 127.10.0.1-127.209.249.250, so
// that programs of parallel tests (and of other test processes) rarely
// meet.
func LoopbackIP() string {
	return fmt.Sprintf("127.%d.%d.%d", 10+rand.N(200), rand.N(250), 1+rand.N(250))
}

// Kamailio is a real Kamailio registrar with digest authentication: the
// password of user U is "pw-U" (pv_auth_check), bindings last at most
// maxExpires seconds.
type Kamailio struct {
	Addr   string // host:port of its UDP listener
	ctl    string
	kamcmd string
}

// StartKamailio runs Kamailio on an address of its own in 127/8 as a
// registrar (digest with algorithm) and record-routing proxy to registered
// contacts; it is stopped by PID when the test ends.
func StartKamailio(t testing.TB, algorithm string, maxExpires int) *Kamailio {
	t.Helper()
	return StartKamailioRoutes(t, algorithm, maxExpires)
}

// KamailioRoute is a static route of StartKamailioRoutes: an INVITE
// outside a dialog whose Request-URI user starts with Prefix and that has
// no registered contact is relayed to To (host:port), record-routed like
// the others. It stands for the PSTN gateway or the far PBX behind a
// proxy, for far ends that do not register (SIPp).
type KamailioRoute struct {
	Prefix string // digits
	To     string // host:port
}

// StartKamailioRoutes is StartKamailio with static routes, tried in
// order after the location table.
func StartKamailioRoutes(t testing.TB, algorithm string, maxExpires int, routes ...KamailioRoute) *Kamailio {
	t.Helper()
	var static strings.Builder
	for _, r := range routes {
		if strings.Trim(r.Prefix, "0123456789") != "" || r.Prefix == "" {
			t.Fatalf("kamailio route prefix %q: digits only", r.Prefix)
		}
		if _, _, err := net.SplitHostPort(r.To); err != nil {
			t.Fatalf("kamailio route to %q: %v", r.To, err)
		}
		fmt.Fprintf(&static, "\t\tif ($rU =~ \"^%s\") {\n\t\t\t$du = \"sip:%s\";\n\t\t\tt_relay();\n\t\t\texit;\n\t\t}\n", r.Prefix, r.To)
	}
	bin := RequireProgram(t, "kamailio")
	kamcmd := RequireProgram(t, "kamcmd")
	dir, err := os.MkdirTemp("", "kam")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ip := LoopbackIP()
	k := &Kamailio{Addr: ip + ":5060", ctl: filepath.Join(dir, "ctl"), kamcmd: kamcmd}
	// maxbuffer: Kamailio probes its UDP receive buffer up to this size
	// (default 256 KiB); the call-load benchmark's bursts overflowed that.
	cfg := fmt.Sprintf(`#!KAMAILIO
debug=1
log_stderror=yes
children=2
maxbuffer=4194304
disable_tcp=yes
listen=udp:%s
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "ctl.so"
loadmodule "rr.so"
modparam("ctl", "binrpc", "unix:%s")
# ul.dump of thousands of bindings (the cluster soak) needs more than the
# default 32 KiB reply and 8 KiB structure (values in KiB).
modparam("ctl", "binrpc_max_body_size", 4096)
modparam("ctl", "binrpc_struct_max_body_size", 4096)
modparam("registrar", "max_expires", %d)
modparam("auth", "algorithm", "%s")
request_route {
	if (is_method("REGISTER")) {
		if (!pv_auth_check("$fd", "pw-$fU", "0", "1")) {
			auth_challenge("$fd", "1");
			exit;
		}
		if (!save("location")) {
			sl_reply_error();
		}
		exit;
	}
	# Calls: to a registered contact, with Kamailio staying in the path.
	if (has_totag()) {
		if (loose_route()) {
			t_relay();
			exit;
		}
		if (is_method("ACK") && t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	# Calls to 9...: the caller must authenticate (407; pv_auth_check reads
	# Proxy-Authorization for methods other than REGISTER), then are refused
	# busy; proves a UAC answers a proxy challenge on INVITE.
	if (is_method("INVITE") && $rU =~ "^9") {
		if (!pv_auth_check("$fd", "pw-$fU", "0", "0")) {
			proxy_challenge("$fd", "1");
			exit;
		}
		sl_send_reply("486", "Busy Here");
		exit;
	}
	if (is_method("INVITE")) {
		record_route();
		if (lookup("location")) {
			t_relay();
			exit;
		}
%s		sl_send_reply("404", "Not Found");
		exit;
	}
	sl_send_reply("404", "Not here");
}
`, k.Addr, k.ctl, maxExpires, algorithm, static.String())
	path := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", path, "-DD", "-E", "-m", "512", "-M", "64", "-Y", dir, "-w", dir, "-P", filepath.Join(dir, "kamailio.pid"))
	logs := &Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// The launched process is Kamailio's main process: SIGTERM stops
		// it and its children.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("kamailio log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := k.Stat("usrloc:location_contacts"); err == nil {
			return k
		}
		select {
		case <-exited:
			t.Fatalf("kamailio exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kamailio did not come up:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stat reads one Kamailio statistic over its control socket.
func (k *Kamailio) Stat(name string) (int, error) {
	out, err := exec.Command(k.kamcmd, "-s", "unix:"+k.ctl, "stats.get_statistics", "all").Output()
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(regexp.QuoteMeta(name) + ` = (\d+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no %s in %q", name, out)
	}
	return strconv.Atoi(string(m[1]))
}

// SIPp is a SIPp process started by a test.
type SIPp struct {
	Addr   string  // host:port it listens on
	Output *Buffer // its screen and errors
	done   chan error
}

// StartSIPp runs SIPp with args on a free port of its own 127/8 address
// and returns once its socket is bound. The test stops it by PID if it is
// still running at the end.
func StartSIPp(t testing.TB, args ...string) *SIPp {
	bin := RequireProgram(t, "sipp")
	ip := LoopbackIP()
	port := 5070
	full := append([]string{"-i", ip, "-p", strconv.Itoa(port), "-m", "1", "-nostdin", "-timeout", "20s",
		"-buff_size", "4194304", "-trace_err", "-error_file", filepath.Join(t.TempDir(), "err.log")}, args...)
	cmd := exec.Command(bin, full...)
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &SIPp{Addr: net.JoinHostPort(ip, strconv.Itoa(port)), done: make(chan error, 1), Output: out}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-r.done:
			r.done <- err
		default:
			_ = cmd.Process.Kill()
		}
	})
	// Bound once the kernel lists the socket. (Probing by binding the
	// address ourselves could take it at the moment SIPp binds.)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if udpBound(ip, port) {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("sipp did not bind %s:\n%s", r.Addr, out.String())
	return nil
}

// udpBound reports whether a UDP socket is bound to ip:port, from
// /proc/net/udp (addresses in hex, IPv4 in host byte order).
func udpBound(ip string, port int) bool {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return false
	}
	a := net.ParseIP(ip).To4()
	if a == nil {
		return false
	}
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], port)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == want {
			return true
		}
	}
	return false
}

// Wait fails the test unless SIPp ends within 30 s with every call
// successful.
func (r *SIPp) Wait(t testing.TB) {
	t.Helper()
	r.WaitFor(t, 30*time.Second)
}

// WaitFor is Wait with another limit.
func (r *SIPp) WaitFor(t testing.TB, limit time.Duration) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatalf("sipp failed: %v\n%s", err, r.Output.String())
		}
	case <-time.After(limit):
		t.Fatalf("sipp did not finish:\n%s", r.Output.String())
	}
}

// StartOsmoMGW runs osmo-mgw (domain "mgw", endpoints rtpbridge/1..8) and
// returns its MGCP address once ready(addr) reports it answers. osmo-mgw 1.10
// binds its VTY and CTRL ports (4243, 4267) whatever the config says, so
// each instance gets an address of its own in 127/8 instead of a free port.
// It is stopped by PID when the test ends.
func StartOsmoMGW(t testing.TB, ready func(addr string) bool) string {
	bin := RequireProgram(t, "osmo-mgw")
	dir := t.TempDir()
	for attempt := 0; attempt < 3; attempt++ {
		ip := LoopbackIP()
		cfg := fmt.Sprintf(`log stderr
 logging filter all 1
 logging level set-all notice
line vty
 bind %[1]s
ctrl
 bind %[1]s
mgcp
 bind ip %[1]s
 bind port 2427
 rtp port-range 16002 16099
 rtp bind-ip %[1]s
 rtp ip-probing
 domain mgw
 number endpoints 8
`, ip)
		path := filepath.Join(dir, "osmo-mgw.cfg")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-c", path)
		var logs Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		addr := ip + ":2427"
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if ready(addr) {
				t.Cleanup(func() {
					stop()
					if t.Failed() {
						t.Logf("osmo-mgw log:\n%s", logs.String())
					}
				})
				return addr
			}
			select {
			case err := <-exited:
				exited <- err
				deadline = time.Now() // it died: try another address
			default:
			}
		}
		stop()
		t.Logf("osmo-mgw attempt %d did not come up:\n%s", attempt+1, logs.String())
	}
	t.Fatal("osmo-mgw did not start")
	return ""
}

// Contact is one binding in Kamailio's location table.
type Contact struct {
	AoR     string // the user part, as Kamailio keys it
	Address string // the Contact URI
	Expires int    // seconds left
}

// Contacts lists Kamailio's location table (kamcmd ul.dump). kamcmd
// refuses replies past 64 KiB or so (a few hundred bindings): use
// ContactsOf for more.
func (k *Kamailio) Contacts() ([]Contact, error) {
	out, err := k.rpc("ul.dump")
	if err != nil {
		return nil, err
	}
	return parseContacts(out), nil
}

// ContactsOf looks up the bindings of each user (kamcmd ul.lookup, a few
// in parallel); a user without any has none in the result.
func (k *Kamailio) ContactsOf(users []string) ([]Contact, error) {
	var (
		mu   sync.Mutex
		res  []Contact
		errs []error
		wg   sync.WaitGroup
	)
	next := make(chan string)
	for range 4 {
		wg.Go(func() {
			for u := range next {
				out, err := k.rpc("ul.lookup", "location", "s:"+u)
				mu.Lock()
				switch {
				case err == nil:
					res = append(res, parseContacts(out)...)
				case !strings.Contains(err.Error(), "404"):
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	for _, u := range users {
		next <- u
	}
	close(next)
	wg.Wait()
	return res, errors.Join(errs...)
}

// rpc runs one kamcmd command; kamcmd exits 0 on an RPC error, which is
// returned as an error here ("error: 404 - AOR not found", say).
func (k *Kamailio) rpc(args ...string) ([]byte, error) {
	out, err := exec.Command(k.kamcmd, append([]string{"-s", "unix:" + k.ctl}, args...)...).CombinedOutput()
	t := bytes.TrimSpace(out)
	if err != nil {
		return nil, fmt.Errorf("kamcmd %s: %w: %s", args[0], err, t)
	}
	if bytes.HasPrefix(bytes.ToLower(t), []byte("error")) {
		return nil, fmt.Errorf("kamcmd %s: %s", args[0], t)
	}
	return out, nil
}

// parseContacts reads the AoR, Address and Expires lines of ul.dump or
// ul.lookup output.
func parseContacts(out []byte) []Contact {
	var (
		res []Contact
		aor string
	)
	for _, line := range strings.Split(string(out), "\n") {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "AoR":
			aor = val
		case "Address":
			res = append(res, Contact{AoR: aor, Address: val})
		case "Expires":
			if len(res) > 0 {
				// "Expires: 57", or "permanent" / "deleted" / "expired".
				n, err := strconv.Atoi(val)
				if err != nil {
					n = -1
				}
				res[len(res)-1].Expires = n
			}
		}
	}
	return res
}
