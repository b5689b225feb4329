package sim

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mgsip/mgsip/internal/config"
)

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := config.LoadFile("../../configs/demo.yaml", os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := RunDemo(ctx, &out, cfg.File); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"RSIP", "AUEP", "CRCX", "MDCX", "250 ", "INVITE sip:1002@", "SIP/2.0 180", "ACK", "BYE", "VERDICT: OK"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out.String())
	}
}
