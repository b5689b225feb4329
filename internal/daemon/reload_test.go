package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/sirupsen/logrus"
)

// TestReloadTellsTheTruth: a reload applies what it can (log level,
// trace switch, lines), names what needs a restart in its answer, the
// log and a metric, and reports lines added, removed and changed.
func TestReloadTellsTheTruth(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mgsip.yaml")
	conf := func(level, sipListen, user2, trace string, lines string) string {
		return `log:
  level: ` + level + `
mgcp:
  listen: 127.0.0.1:0
  trace: ` + trace + `
sip:
  listeners:
    - listen: "` + sipListen + `"
admin:
  listen: 127.0.0.1:0
peers:
  - name: pbx
    host: 127.0.0.1
    auth: ip
gateways:
  - name: gw
    domain: gw.test
    address: 127.0.0.1
lines:
  - gateway: gw
    endpoint: aaln/1
    user: "101"
  - gateway: gw
    endpoint: aaln/2
    user: "` + user2 + `"
` + lines
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(conf("info", "127.0.0.1:0", "102", "false", "  - gateway: gw\n    endpoint: aaln/3\n    user: \"103\"\n"))
	cfg, err := config.LoadFile(path, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testutil.Buffer{}
	log := logrus.New()
	log.SetOutput(stderr)
	ready, adminReady := make(chan net.Addr, 1), make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: path, Config: cfg, Log: log, Ready: ready, AdminReady: adminReady})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}()
	var admin net.Addr
	select {
	case <-ready:
		admin = <-adminReady
	case err := <-done:
		t.Fatalf("daemon ended: %v", err)
	}
	post := func() (int, ReloadReport) {
		t.Helper()
		resp, err := http.Post("http://"+admin.String()+"/api/v1/reload", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rep ReloadReport
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			if strings.Contains(string(body), "null") {
				t.Errorf("the answer has a null list: %s", body)
			}
			if err := json.Unmarshal(body, &rep); err != nil {
				t.Fatalf("answer %s: %v", body, err)
			}
		}
		return resp.StatusCode, rep
	}

	// Log level and the MGCP trace apply; the SIP listener needs a
	// restart; line 2's user changed (idle: at once), line 3 is gone,
	// line 4 is new.
	write(conf("debug", "127.0.0.1:1", "202", "true", "  - gateway: gw\n    endpoint: aaln/4\n    user: \"104\"\n"))
	code, rep := post()
	if code != http.StatusOK {
		t.Fatalf("reload: %d", code)
	}
	if want := []string{"sip.listeners[0].listen"}; !reflect.DeepEqual(rep.NeedsRestart, want) {
		t.Errorf("needs restart %v, want %v", rep.NeedsRestart, want)
	}
	if got := strings.Join(rep.Applied, " "); got != "log.level mgcp.trace lines[1].user lines[2].endpoint lines[2].user" {
		t.Errorf("applied %q", got)
	}
	if !reflect.DeepEqual(rep.Lines.Added, []string{"gw/aaln/4"}) || !reflect.DeepEqual(rep.Lines.Removed, []string{"gw/aaln/3"}) ||
		!reflect.DeepEqual(rep.Lines.Changed, map[string][]string{"gw/aaln/2": {"user", "auth_user"}}) || len(rep.Lines.Deferred) != 0 {
		t.Errorf("lines %+v", rep.Lines)
	}
	if log.GetLevel() != logrus.DebugLevel {
		t.Errorf("log level %s after the reload, want debug", log.GetLevel())
	}
	if !strings.Contains(stderr.String(), "needs restart: sip.listeners[0].listen") {
		t.Errorf("the log does not name the key:\n%s", stderr.String())
	}
	metrics := func() string {
		resp, err := http.Get("http://" + admin.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if m := metrics(); !strings.Contains(m, `mgsip_config_needs_restart{key="sip.listeners[0].listen"} 1`) {
		t.Errorf("no needs-restart metric:\n%s", m)
	}

	// The same file again: nothing to apply, the restart key still named.
	code, rep = post()
	if code != http.StatusOK || len(rep.Applied) != 0 || !reflect.DeepEqual(rep.NeedsRestart, []string{"sip.listeners[0].listen"}) ||
		len(rep.Lines.Added)+len(rep.Lines.Removed)+len(rep.Lines.Changed)+len(rep.Lines.Deferred) != 0 {
		t.Errorf("second reload: %d %+v", code, rep)
	}
	// Back to the listener mgsip runs with: nothing needs a restart.
	write(conf("debug", "127.0.0.1:0", "202", "true", "  - gateway: gw\n    endpoint: aaln/4\n    user: \"104\"\n"))
	if code, rep = post(); code != http.StatusOK || len(rep.NeedsRestart) != 0 {
		t.Errorf("third reload: %d %+v", code, rep)
	}
	if m := metrics(); strings.Contains(m, `mgsip_config_needs_restart{`) {
		t.Errorf("needs-restart metric left after the key went back:\n%s", m)
	}
	// A broken file: 422 with the problems.
	write("colour: blue\n")
	if code, _ := post(); code != http.StatusUnprocessableEntity {
		t.Errorf("broken file: %d", code)
	}
}

// TestReloadReportJSON: every list of the reload answer is [] when empty
// (never null) and the lines come in natural order.
func TestReloadReportJSON(t *testing.T) {
	rep := &ReloadReport{Status: "reloaded"}
	rep.Lines.Added = []string{"gw/aaln/10", "gw/aaln/2", "gw/aaln/1"}
	rep.Lines.Deferred = map[string][]string{"gw/aaln/3": nil}
	rep.normalize()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"status":"reloaded","lines":{"added":["gw/aaln/1","gw/aaln/2","gw/aaln/10"],"removed":[],"changed":{},` +
		`"deferred":{"gw/aaln/3":[]}},"applied":[],"needs_restart":[],"ignored":[]}`
	if string(b) != want {
		t.Errorf("JSON\n%s\nwant\n%s", b, want)
	}
}
