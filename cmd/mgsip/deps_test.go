package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/mgsip/mgsip"

type listedPackage struct {
	ImportPath                string
	Standard                  bool
	Deps                      []string
	Imports                   []string
	TestImports, XTestImports []string
}

// goList runs `go list -deps -json` on the module's packages.
func goList(t *testing.T, args ...string) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []listedPackage
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestDependencyRule enforces the dependency rule of the architecture:
// mgcp imports the standard library and logrus only, sip imports sipgo and
// logrus only (plus the two exceptions docs/development.md gives reasons
// for), mapping the standard library only; none of them depends, even
// indirectly, on another package of this module; only cmd and the daemon's
// parts under internal/ that show or wire the bridge import it; and the
// *test packages are used from tests, cmd and the simulator only. Each
// internal/ package has its own allowed set (docs/development.md says why
// each exists). What the allowed libraries themselves import is theirs to
// choose.
func TestDependencyRule(t *testing.T) {
	std := map[string]bool{}
	for _, p := range goList(t, "std") {
		std[p.ImportPath] = true
	}
	pkgs := goList(t, "./...")
	if len(pkgs) == 0 {
		t.Fatal("no packages listed")
	}
	allowed := map[string][]string{
		module + "/mgcp": {"github.com/sirupsen/logrus"},
		module + "/sip": {"github.com/emiago/sipgo", "github.com/sirupsen/logrus",
			"github.com/icholy/digest", "golang.org/x/time/rate"},
		module + "/mapping": {},
		module + "/bridge": {"github.com/pion/sdp", "github.com/sirupsen/logrus", module + "/mgcp", module + "/sip",
			module + "/mapping"},
		// The daemon's parts.
		module + "/internal/config": {"go.yaml.in/yaml/v3", module + "/mapping", module + "/mgcp", module + "/sip"},
		module + "/internal/trace":  {"github.com/sirupsen/logrus", "github.com/gopacket/gopacket"},
		module + "/internal/cdr":    {"gopkg.in/natefinch/lumberjack.v2", module + "/bridge"},
		module + "/internal/metrics": {"github.com/prometheus/client_golang", module + "/bridge", module + "/mgcp",
			module + "/sip", module + "/internal/buildinfo"},
		module + "/internal/buildinfo":    {},
		module + "/internal/chanmgcp":     {},
		module + "/internal/licensecheck": {},
		module + "/internal/admin": {"github.com/prometheus/client_golang", "github.com/sirupsen/logrus", "golang.org/x/net/netutil", "golang.org/x/time/rate", module + "/bridge",
			module + "/mgcp", module + "/internal/trace", module + "/internal/config"},
		module + "/internal/daemon": {"github.com/sirupsen/logrus", "golang.org/x/sync/errgroup", "golang.org/x/sys/unix",
			"github.com/coreos/go-systemd/v22", module + "/bridge", module + "/mapping", module + "/mgcp", module + "/sip",
			module + "/internal/admin", module + "/internal/cdr", module + "/internal/config", module + "/internal/metrics", module + "/internal/trace",
			module + "/internal/cluster"},
		// etcd stays here: the bridge never imports it (the architecture).
		module + "/internal/cluster": {"github.com/sirupsen/logrus", "go.etcd.io/etcd/client/v3", "go.etcd.io/etcd/api/v3",
			"go.uber.org/zap"},
		module + "/internal/sim": {"github.com/sirupsen/logrus", module + "/bridge", module + "/mapping", module + "/mgcp",
			module + "/mgcp/mgcptest", module + "/sip", module + "/sip/siptest", module + "/internal/config",
			module + "/internal/trace"},
	}
	// standalone: these depend on no other package of this module.
	standalone := map[string]bool{module + "/mgcp": true, module + "/sip": true, module + "/mapping": true,
		module + "/internal/cluster": true}
	// bridgeUsers may import bridge: the binary and the daemon's parts
	// that wire it, show it or drive it.
	bridgeUsers := map[string]bool{module + "/cmd/mgsip": true, module + "/internal/daemon": true,
		module + "/internal/admin": true, module + "/internal/metrics": true, module + "/internal/sim": true,
		module + "/internal/cdr": true}
	// testUsers may import the *test packages outside tests: the binary and
	// the simulator (dev tools, as the architecture allows).
	testUsers := map[string]bool{module + "/cmd/mgsip": true, module + "/internal/sim": true, module + "/cmd/mgsip-loadgen": true}
	checked := 0
	for _, p := range pkgs {
		ok, ruled := allowed[p.ImportPath]
		if ruled {
			checked++
			for _, imp := range p.Imports {
				if std[imp] || strings.HasPrefix(imp, "vendor/") {
					continue
				}
				if !hasPrefixIn(imp, ok) {
					t.Errorf("%s imports %s, outside its allowed set %v", p.ImportPath, imp, ok)
				}
			}
			for _, d := range p.Deps {
				if strings.HasPrefix(d, module+"/") && standalone[p.ImportPath] {
					t.Errorf("%s depends on %s; the protocol stacks and the rules stand alone", p.ImportPath, d)
				}
			}
		}
		for _, imp := range p.Imports {
			if imp == module+"/bridge" && !bridgeUsers[p.ImportPath] {
				t.Errorf("%s imports bridge; only %v may", p.ImportPath, keys(bridgeUsers))
			}
			if strings.HasSuffix(imp, "test") && strings.HasPrefix(imp, module+"/") &&
				!testUsers[p.ImportPath] && !strings.HasSuffix(p.ImportPath, "test") {
				t.Errorf("%s imports test package %s outside tests", p.ImportPath, imp)
			}
		}
	}
	if checked != len(allowed) {
		t.Fatalf("checked %d of the %d ruled packages", checked, len(allowed))
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, strings.TrimPrefix(k, module+"/"))
	}
	sort.Strings(out)
	return out
}

func hasPrefixIn(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}
