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
// mgcp uses the standard library and logrus only, sip uses sipgo and
// logrus only, mapping the standard library only, neither protocol stack
// imports the other or bridge, only cmd imports bridge, and the *test
// packages are used from tests and cmd only.
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
		module + "/mgcp":    {"github.com/sirupsen/logrus", "golang.org/x/sys/"},
		module + "/sip":     {"github.com/emiago/sipgo", "github.com/sirupsen/logrus", "golang.org/x/sys/"},
		module + "/mapping": {},
	}
	internalAllowed := map[string][]string{
		module + "/mgcp":    {},
		module + "/sip":     {},
		module + "/mapping": {},
	}
	checked := 0
	for _, p := range pkgs {
		ok, ruled := allowed[p.ImportPath]
		if ruled {
			checked++
			for _, d := range p.Deps {
				if std[d] || strings.HasPrefix(d, "vendor/") {
					continue
				}
				if strings.HasPrefix(d, module+"/") {
					if !hasPrefixIn(d, internalAllowed[p.ImportPath]) {
						t.Errorf("%s depends on %s", p.ImportPath, d)
					}
					continue
				}
				if !hasPrefixIn(d, ok) {
					t.Errorf("%s depends on %s, outside its allowed set %v", p.ImportPath, d, ok)
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
	if checked == 0 {
		t.Fatal("no ruled package found; the rule checks nothing")
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
