package licensecheck

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentify(t *testing.T) {
	apache, err := os.ReadFile("../../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, text, want string
		allowed          bool
	}{
		{"our Apache-2.0", string(apache), "Apache-2.0", true},
		{"MIT", "Copyright 2020 X\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\nof this software ...\nThe above copyright notice and this permission notice shall be included in\nall copies", "MIT", true},
		{"BSD-2", "Redistribution and use in source and binary forms, with or without modification, are permitted ...\n1. Redistributions of source code must retain the above copyright notice ...\n2. Redistributions in binary form must reproduce the above copyright notice ...", "BSD-2-Clause", true},
		{"BSD-3", "Redistribution and use in source and binary forms, with or without\nmodification ... Redistributions of source code must retain the above copyright notice,\nRedistributions in binary form must reproduce the above copyright notice\nNeither the name of Google Inc. nor the names of its contributors may be used to endorse or promote products derived from this software", "BSD-3-Clause", true},
		{"ISC", "Permission to use, copy, modify, and/or distribute this software for any purpose with or without fee is hereby granted", "ISC", true},
		{"GPL", "This program is free software; you can redistribute it under the terms of the GNU General Public License as published by", "GPL", false},
		{"LGPL mentions GPL", "GNU Lesser General Public License ... the GNU General Public License", "LGPL", false},
		{"two licenses", "Apache License\nVersion 2.0\n3. Grant of Patent License.\n\nPermission is hereby granted, free of charge, to any person obtaining a copy ... The above copyright notice and this permission notice shall be included", "Apache-2.0 AND MIT", true},
		{"unknown", "All rights reserved. Do not copy.", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Identify(c.text)
			if got != c.want {
				t.Fatalf("Identify = %q, want %q", got, c.want)
			}
			if Allowed(got) != c.allowed {
				t.Fatalf("Allowed(%q) = %v, want %v", got, !c.allowed, c.allowed)
			}
		})
	}
}

func TestModuleWithoutLicense(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("MIT licensed, trust me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Module(dir); !errors.Is(err, ErrNoLicenseFile) {
		t.Fatalf("Module = %v, want ErrNoLicenseFile", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "LICENSE"), []byte("Use at will."), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Module(dir); err == nil || !strings.Contains(err.Error(), "not recognised") {
		t.Fatalf("Module = %v, want not recognised", err)
	}
}

// TestDependencies is the gate: every module a package of mgsip is built
// from has a recognised, compatible license, and docs/licenses.md lists
// exactly those modules with their version and license. A new dependency
// fails here until someone has read its license and added its row.
func TestDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("go not in PATH")
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}", "./...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type mod struct{ version, license string }
	mods := map[string]mod{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		if _, seen := mods[f[0]]; seen {
			continue
		}
		id, err := Module(f[2])
		if err != nil {
			t.Errorf("%s %s: %v", f[0], f[1], err)
			continue
		}
		if !Allowed(id) {
			t.Errorf("%s %s: license %s is not known to be compatible with Apache-2.0", f[0], f[1], id)
		}
		mods[f[0]] = mod{f[1], id}
		// Apache-2.0 §4(d): a module's NOTICE goes with the binary.
		if notice, err := os.ReadFile(filepath.Join(f[2], "NOTICE")); err == nil {
			ours, err := os.ReadFile("../../NOTICE")
			if err != nil {
				t.Fatal(err)
			}
			head := f[0] + " (" + f[1] + ")\n\n"
			if !bytes.Contains(ours, append([]byte(head), bytes.TrimRight(notice, "\n")...)) {
				t.Errorf("NOTICE: add the NOTICE of %s %s under a line %q", f[0], f[1], strings.TrimSpace(head))
			}
		}
	}
	if len(mods) == 0 {
		t.Fatal("go list found no dependency at all")
	}

	doc, err := os.Open("../../docs/licenses.md")
	if err != nil {
		t.Fatal(err)
	}
	defer doc.Close()
	listed := map[string]mod{}
	sc := bufio.NewScanner(doc)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) != 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		path := strings.Trim(strings.TrimSpace(cells[1]), "`")
		listed[path] = mod{strings.TrimSpace(cells[2]), strings.TrimSpace(cells[3])}
	}
	for path, m := range mods {
		l, ok := listed[path]
		switch {
		case !ok:
			t.Errorf("docs/licenses.md: add | `%s` | %s | %s |", path, m.version, m.license)
		case l != m:
			t.Errorf("docs/licenses.md: `%s` says %s %s, the module is %s %s", path, l.version, l.license, m.version, m.license)
		}
	}
	for path := range listed {
		if _, ok := mods[path]; !ok {
			t.Errorf("docs/licenses.md lists `%s`, which mgsip no longer uses", path)
		}
	}
}
