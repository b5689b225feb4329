// Package licensecheck recognises the license of a Go module from the
// license files in its directory, so that a test can refuse a dependency
// whose license is unknown or not compatible with mgsip's Apache-2.0, and
// keep docs/licenses.md in step with the modules the binary is built from.
//
// Recognition is by the license's own operative wording, not by file name:
// a file named LICENSE that says something else is "unknown", and an
// unknown license is a failure, never a guess.
package licensecheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Compatible lists the licenses whose code may be distributed inside an
// Apache-2.0 binary. Copyleft licenses (GPL, LGPL, AGPL) are absent on
// purpose; MPL-2.0 is file-level copyleft and compatible, but no
// dependency uses it today, so it would need a look first.
var Compatible = map[string]bool{
	"Apache-2.0":   true,
	"MIT":          true,
	"BSD-2-Clause": true,
	"BSD-3-Clause": true,
	"ISC":          true,
}

// ErrNoLicenseFile is returned when a module directory holds no license file.
var ErrNoLicenseFile = errors.New("no license file")

// fingerprints are checked in order; each needs all of its phrases
// (whitespace and case folded). More specific ones come first.
var fingerprints = []struct {
	id      string
	phrases []string
}{
	{"Apache-2.0", []string{"apache license", "version 2.0", "grant of patent license"}},
	// The short notice that points at the full text (yaml's LICENSE).
	{"Apache-2.0", []string{"licensed under the apache license, version 2.0"}},
	{"BSD-3-Clause", []string{
		"redistribution and use in source and binary forms",
		"redistributions of source code must retain the above copyright notice",
		"neither the name of",
		"endorse or promote products derived from this software",
	}},
	{"BSD-2-Clause", []string{
		"redistribution and use in source and binary forms",
		"redistributions of source code must retain the above copyright notice",
		"redistributions in binary form must reproduce the above copyright notice",
	}},
	{"MIT", []string{
		"permission is hereby granted, free of charge, to any person obtaining a copy",
		"the above copyright notice and this permission notice shall be included",
	}},
	{"ISC", []string{
		"permission to use, copy, modify, and/or distribute this software for any purpose",
	}},
	{"GPL", []string{"gnu general public license"}},
	{"LGPL", []string{"gnu lesser general public license"}},
	{"MPL-2.0", []string{"mozilla public license", "2.0"}},
}

var spaces = regexp.MustCompile(`\s+`)

func normalize(s string) string {
	return spaces.ReplaceAllString(strings.ToLower(s), " ")
}

// Identify names the license a text carries, or "" when it is none of the
// known ones. A text that carries two (yaml's LICENSE holds MIT and
// Apache-2.0 parts) gives both, joined with " AND " in a fixed order.
func Identify(text string) string {
	t := normalize(text)
	var found []string
	for _, fp := range fingerprints {
		all := true
		for _, p := range fp.phrases {
			if !strings.Contains(t, p) {
				all = false
				break
			}
		}
		if !all || contains(found, fp.id) {
			continue
		}
		// BSD-3 matches BSD-2's phrases too, LGPL mentions GPL.
		if fp.id == "BSD-2-Clause" && contains(found, "BSD-3-Clause") {
			continue
		}
		if fp.id == "GPL" && strings.Contains(t, "gnu lesser general public license") {
			continue
		}
		found = append(found, fp.id)
	}
	sort.Strings(found)
	return strings.Join(found, " AND ")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var licenseName = regexp.MustCompile(`(?i)^(licen[cs]e|copying)([.-].*)?$`)

// Module identifies the license of the module in dir from its top-level
// LICENSE/COPYING files (and a LICENSES/ directory, REUSE style).
func Module(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var files []string
	for _, e := range entries {
		if !licenseName.MatchString(e.Name()) {
			continue
		}
		if e.IsDir() {
			sub, err := os.ReadDir(filepath.Join(dir, e.Name()))
			if err != nil {
				return "", err
			}
			for _, s := range sub {
				if !s.IsDir() {
					files = append(files, filepath.Join(dir, e.Name(), s.Name()))
				}
			}
			continue
		}
		files = append(files, filepath.Join(dir, e.Name()))
	}
	if len(files) == 0 {
		return "", fmt.Errorf("%s: %w", dir, ErrNoLicenseFile)
	}
	ids := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		id := Identify(string(b))
		if id == "" {
			return "", fmt.Errorf("%s: license text not recognised", f)
		}
		for _, part := range strings.Split(id, " AND ") {
			ids[part] = true
		}
	}
	var out []string
	for id := range ids {
		out = append(out, id)
	}
	sort.Strings(out)
	return strings.Join(out, " AND "), nil
}

// Allowed reports whether every part of an identified license (as Identify
// gives it) is compatible.
func Allowed(id string) bool {
	if id == "" {
		return false
	}
	for _, part := range strings.Split(id, " AND ") {
		if !Compatible[part] {
			return false
		}
	}
	return true
}
