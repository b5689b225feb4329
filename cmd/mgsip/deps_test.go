package main

import (
	"encoding/json"
	"io"
	"os/exec"
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
// indirectly, on another package of this module; only cmd imports bridge;
// and the *test packages are used from tests and cmd only. What the allowed
// libraries themselves import is theirs to choose.
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
	}
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
				if strings.HasPrefix(d, module+"/") && p.ImportPath != module+"/bridge" {
					t.Errorf("%s depends on %s; the protocol stacks and the rules stand alone", p.ImportPath, d)
				}
			}
		}
		for _, imp := range p.Imports {
			if imp == module+"/bridge" && !strings.HasPrefix(p.ImportPath, module+"/cmd/") {
				t.Errorf("%s imports bridge; only cmd may", p.ImportPath)
			}
			if strings.HasSuffix(imp, "test") && strings.HasPrefix(imp, module+"/") &&
				!strings.HasPrefix(p.ImportPath, module+"/cmd/") && !strings.HasSuffix(p.ImportPath, "test") {
				t.Errorf("%s imports test package %s outside tests", p.ImportPath, imp)
			}
		}
	}
	if checked != len(allowed) {
		t.Fatalf("checked %d of the %d ruled packages", checked, len(allowed))
	}
}

func hasPrefixIn(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}
