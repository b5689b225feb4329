package chanmgcp

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzImport: any mgcp.conf (and any env file) is parsed and converted
// without a panic; problems are reported, never crashed on.
func FuzzImport(f *testing.F) {
	if b, err := os.ReadFile("testdata/mgcp.conf.sample"); err == nil {
		f.Add(b, []byte(""))
	}
	f.Add([]byte("[general]\n[gw](!)\nhost=dynamic\n[gw1](gw)\nline => aaln/1\ncallerid = \"A\" <1>\ntrunk => ds/ds1-1/1\n"), []byte("MGSIP_GW1_AALN_1=x\n"))
	f.Add([]byte("#include self.conf\n[a](+)\n;--\n--;\nline=\n"), []byte("="))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, conf, env []byte) {
		p := filepath.Join(dir, "mgcp.conf")
		if err := os.WriteFile(p, conf, 0o600); err != nil {
			t.Fatal(err)
		}
		// An #include of the file itself must end, not loop.
		_ = os.WriteFile(filepath.Join(dir, "self.conf"), conf, 0o600)
		parsed, err := ParseFile(p)
		if err != nil {
			return
		}
		_, _ = Convert(parsed, Options{Secrets: ParseEnv(env), Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 1<<16))})
	})
}
