package config

import (
	"bytes"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/mgsip/mgsip/mapping"
	"go.yaml.in/yaml/v3"
)

// maxRefine bounds the size of a file whose syntax error is located by
// re-parsing its prefixes, maxLines the lines tried past the one the
// library names and maxColumns the prefixes of the problem's line: a
// few hundred parses of a small file at most.
const (
	maxRefine  = 256 << 10
	maxLines   = 50
	maxColumns = 300
)

// syntaxPosition finds where a YAML syntax error really is. The yaml
// library reports the line where the construct that failed began (often
// the line before the problem) and no column; the first prefix of the
// file, line by line from that line on, that fails with the same message
// ends on the problem's line, and the shortest prefix of that line that
// still fails ends on its column. line is the library's 1-based line.
func syntaxPosition(data []byte, line int, reason string) (int, int) {
	if len(data) > maxRefine || line <= 0 {
		return line, 0
	}
	same := func(prefix []byte) bool {
		var n yaml.Node
		err := yaml.Unmarshal(prefix, &n)
		if err == nil {
			return false
		}
		_, r := splitYAMLError(err.Error())
		return r == reason
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	start := 0
	for i := 0; i < line-1 && i < len(lines); i++ {
		start += len(lines[i])
	}
	for l := line - 1; l < len(lines) && l < line-1+maxLines; l, start = l+1, start+len(lines[l]) {
		end := start + len(lines[l])
		if !same(data[:end]) {
			continue
		}
		text := lines[l]
		if reason == "found character that cannot start any token" {
			if i := bytes.IndexByte(text, '\t'); i >= 0 {
				return l + 1, i + 1
			}
		}
		for k := 1; k <= len(text) && k <= maxColumns; k++ {
			if same(data[:start+k]) {
				return l + 1, k
			}
		}
		return l + 1, 0
	}
	return line, 0
}

// splitYAMLError returns the line and the message of a yaml error.
func splitYAMLError(msg string) (int, string) {
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, m[2]
	}
	return 0, strings.TrimPrefix(msg, "yaml: ")
}

var unknownAnchor = regexp.MustCompile(`^unknown anchor '([^']+)' referenced$`)

// anchorPosition finds the first use of an alias that names no anchor.
func anchorPosition(data []byte, name string) (int, int) {
	re := regexp.MustCompile(`\*` + regexp.QuoteMeta(name) + `\b`)
	loc := re.FindIndex(data)
	if loc == nil {
		return 0, 0
	}
	line := bytes.Count(data[:loc[0]], []byte("\n")) + 1
	col := loc[0] - bytes.LastIndexByte(data[:loc[0]], '\n')
	return line, col
}

// keysAt lists the keys the configuration accepts in the mapping at path
// ("" is the top; "peers[0]" a peer), from the yaml tags of File.
func keysAt(path string) []string {
	t := reflect.TypeOf(File{})
	for _, seg := range splitPath(path) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if strings.HasPrefix(seg, "[") {
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
			continue
		}
		f, ok := fieldByKey(t, seg)
		if !ok {
			return nil
		}
		t = f
	}
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	return structKeys(t)
}

func splitPath(path string) []string {
	var out []string
	for path != "" {
		switch {
		case path[0] == '.':
			path = path[1:]
		case path[0] == '[':
			end := strings.IndexByte(path, ']')
			if end < 0 {
				return append(out, path)
			}
			out = append(out, path[:end+1])
			path = path[end+1:]
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			out = append(out, path[:end])
			path = path[end:]
		}
	}
	return out
}

func yamlName(f reflect.StructField) (name string, inline bool) {
	tag := f.Tag.Get("yaml")
	name, opts, _ := strings.Cut(tag, ",")
	if strings.Contains(opts, "inline") {
		return "", true
	}
	if name == "-" || !f.IsExported() {
		return "", false
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false
}

func structKeys(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := yamlName(f)
		switch {
		case inline:
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, structKeys(ft)...)
			}
		case name != "":
			out = append(out, name)
		}
	}
	return out
}

func fieldByKey(t reflect.Type, key string) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, inline := yamlName(f)
		if inline {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if got, ok := fieldByKey(ft, key); ok {
				return got, true
			}
			continue
		}
		if name == key {
			return f.Type, true
		}
	}
	return nil, false
}

// unknownKeyHint is what follows `unknown key "k"` for a key at path.
func unknownKeyHint(path, key string) string {
	parent := path
	if cut := strings.LastIndexAny(path, ".["); cut >= 0 && strings.HasSuffix(path, key) {
		parent = path[:len(path)-len(key)]
		parent = strings.TrimSuffix(parent, ".")
	} else if path == key {
		parent = ""
	}
	keys := keysAt(parent)
	if keys == nil {
		return ""
	}
	kind := "keys of " + parent
	if parent == "" {
		kind = "top-level keys"
	}
	return " " + mapping.Hint(key, kind, keys)
}
