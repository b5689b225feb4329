package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestActionAndReloadOutput: the action commands print a line for people
// (the API's JSON only with --json), and reload lists lines in natural
// order (aaln/2 before aaln/10).
func TestActionAndReloadOutput(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/reload":
			_, _ = w.Write([]byte(`{"status":"reloaded","lines":{"added":["gw/aaln/10","gw/aaln/2"],"removed":[],` +
				`"changed":{"gw/aaln/11":["user"],"gw/aaln/3":["password"]},"deferred":{}},"applied":[],"needs_restart":[],"ignored":[]}`))
		default:
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		}
	}))
	defer srv.Close()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"drain", "gw"}, "drain gw: ok\n"},
		{[]string{"reregister", "gw/aaln/1"}, "reregister gw/aaln/1: ok\n"},
		{[]string{"rearm", "gw/aaln/1"}, "rearm gw/aaln/1: ok\n"},
		{[]string{"hangup", "abc@host"}, "hangup abc@host: ok\n"},
		{[]string{"enable", "gw", "--json"}, `{"status":"ok"}`},
	} {
		code, out, errOut := runCLI(t, "", append(c.args, "--admin", srv.URL)...)
		if code != 0 || out != c.want {
			t.Errorf("%v: exit %d: %q (stderr %q), want %q", c.args, code, out, errOut, c.want)
		}
	}
	code, out, errOut := runCLI(t, "", "reload", "--admin", srv.URL)
	const want = "reloaded: 2 line(s) added, 0 removed, 2 changed, 0 deferred until their call ends\n" +
		"  added: gw/aaln/2, gw/aaln/10\n" +
		"  changed: gw/aaln/3 (password)\n" +
		"  changed: gw/aaln/11 (user)\n"
	if code != 0 || out != want {
		t.Errorf("reload: exit %d:\n%s(stderr %q)\nwant:\n%s", code, out, errOut, want)
	}
}
