package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/admin"
	"github.com/mgsip/mgsip/internal/config"
	"github.com/mgsip/mgsip/internal/testutil"
	"github.com/sirupsen/logrus"
)

// TestAdminOverUnixSocketWithTokens: the daemon serves its API on the
// configured unix socket with the configured mode and both tokens.
func TestAdminOverUnixSocketWithTokens(t *testing.T) {
	dir, err := os.MkdirTemp("", "mgsip-d")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "admin.sock")
	path := filepath.Join(dir, "mgsip.yaml")
	conf := `mgcp:
  listen: 127.0.0.1:0
sip:
  listeners:
    - listen: 127.0.0.1:0
admin:
  listen: unix:` + sock + `
  socket_mode: "0660"
  token: full-token-0123456789
  read_only_token: read-token-0123456789
gateways:
  - name: gw
    domain: gw.test
    address: 127.0.0.1
`
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFile(path, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(&testutil.Buffer{})
	adminReady := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{ConfigPath: path, Config: cfg, Log: log, AdminReady: adminReady}) }()
	select {
	case a := <-adminReady:
		if a.String() != sock {
			t.Errorf("admin address %s", a)
		}
	case err := <-done:
		t.Fatalf("daemon ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not start")
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v %v", fi, err)
	}
	c := func(tok string) *admin.Client { return &admin.Client{Base: "unix:" + sock, Token: tok} }
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	if _, err := c("read-token-0123456789").Do(rctx, "GET", "/api/v1/lines", nil); err != nil {
		t.Errorf("read-only GET: %v", err)
	}
	var se *admin.StatusError
	if _, err := c("read-token-0123456789").Do(rctx, "POST", "/api/v1/reload", nil); !errors.As(err, &se) || se.Code != 403 {
		t.Errorf("read-only POST: %v", err)
	}
	if _, err := c("").Do(rctx, "GET", "/metrics", nil); !errors.As(err, &se) || se.Code != 401 {
		t.Errorf("no token: %v", err)
	}
	if _, err := c("full-token-0123456789").Do(rctx, "POST", "/api/v1/reload", nil); err != nil {
		t.Errorf("full POST: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after the daemon stopped: %v", err)
	}
}
