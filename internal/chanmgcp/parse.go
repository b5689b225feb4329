// Package chanmgcp reads the configuration of Asterisk's chan_mgcp
// (mgcp.conf) and turns it into an mgsip configuration plus the PBX side
// (PJSIP or chan_sip accounts for every line) and an env file with the
// line secrets: the migration path for the sites that lost chan_mgcp when
// Asterisk 21 removed it. docs/migrating-from-chan_mgcp.md is the mapping
// table.
package chanmgcp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Pos is where an entry was read.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Entry is one "key = value" or "key => value" line.
type Entry struct {
	Key   string // lower-case
	Value string
	Pos   Pos
}

// Section is one [category] of the file, with the entries of its
// templates first (as Asterisk's config loader copies them).
type Section struct {
	Name string
	// Template is true for "[name](!)": never a gateway itself.
	Template bool
	Entries  []Entry
	Pos      Pos
}

// File is a parsed mgcp.conf with its includes.
type File struct {
	Sections []*Section
	// Problems are lines the parser could not read, or directives it does
	// not follow (#exec), with their place.
	Problems []Note
}

// Note is a setting the importer could not carry over, or carried over
// differently, with its place in the input.
type Note struct {
	Pos    Pos
	Key    string
	Reason string
}

func (n Note) String() string {
	if n.Key == "" {
		return n.Pos.String() + ": " + n.Reason
	}
	return n.Pos.String() + ": " + n.Key + ": " + n.Reason
}

// maxIncludeDepth bounds #include nesting (and loops).
const maxIncludeDepth = 10

// ParseFile reads an Asterisk configuration file, following #include and
// #tryinclude relative to the including file's directory, as Asterisk's
// config loader does: categories "[name]", templates "[name](!)",
// inheritance "[name](tpl1,tpl2)", additions "[name](+)", comments ";"
// and ";-- ... --;", and "\;" for a literal semicolon.
func ParseFile(path string) (*File, error) {
	f := &File{}
	p := &parser{f: f, byName: map[string]*Section{}}
	if err := p.file(path, 0, false); err != nil {
		return nil, err
	}
	return f, nil
}

type parser struct {
	f       *File
	byName  map[string]*Section
	cur     *Section
	inBlock bool
}

func (p *parser) note(pos Pos, key, format string, a ...any) {
	p.f.Problems = append(p.f.Problems, Note{Pos: pos, Key: key, Reason: fmt.Sprintf(format, a...)})
}

func (p *parser) file(path string, depth int, try bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if try && errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	for i, raw := range lines {
		pos := Pos{File: path, Line: i + 1}
		line := p.stripComments(raw)
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		switch {
		case strings.HasPrefix(line, "#include") || strings.HasPrefix(line, "#tryinclude"):
			try := strings.HasPrefix(line, "#tryinclude")
			arg := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(line, "#tryinclude"), "#include"))
			arg = strings.Trim(arg, `"<>`)
			if arg == "" {
				p.note(pos, "", "#include without a file name")
				continue
			}
			if depth >= maxIncludeDepth {
				return fmt.Errorf("%s: #include nested more than %d deep (a loop?)", pos, maxIncludeDepth)
			}
			if !filepath.IsAbs(arg) {
				arg = filepath.Join(filepath.Dir(path), arg)
			}
			matches, err := filepath.Glob(arg)
			if err != nil || len(matches) == 0 {
				if try {
					continue
				}
				return fmt.Errorf("%s: #include %s: no such file", pos, arg)
			}
			for _, m := range matches {
				if err := p.file(m, depth+1, try); err != nil {
					return err
				}
			}
		case strings.HasPrefix(line, "#exec"):
			p.note(pos, "", "#exec is not followed (run the command and include its output instead)")
		case strings.HasPrefix(line, "["):
			if err := p.category(line, pos); err != nil {
				return err
			}
		default:
			key, value, ok := splitEntry(line)
			if !ok {
				p.note(pos, "", "not a setting, a [category] or a directive: %q", line)
				continue
			}
			if p.cur == nil {
				p.note(pos, key, "before any [category]; ignored")
				continue
			}
			p.cur.Entries = append(p.cur.Entries, Entry{Key: key, Value: value, Pos: pos})
		}
	}
	return nil
}

// stripComments removes ";" comments and ";-- --;" blocks (which may
// span lines) and turns "\;" into ";".
func (p *parser) stripComments(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if p.inBlock {
			if strings.HasPrefix(s[i:], "--;") {
				p.inBlock = false
				i += 2
			}
			continue
		}
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == ';':
			b.WriteByte(';')
			i++
		case strings.HasPrefix(s[i:], ";--"):
			p.inBlock = true
			i += 2
		case s[i] == ';':
			return b.String()
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func splitEntry(line string) (key, value string, ok bool) {
	i := strings.IndexByte(line, '=')
	if i <= 0 {
		return "", "", false
	}
	key = strings.ToLower(strings.TrimSpace(line[:i]))
	value = line[i+1:]
	value = strings.TrimPrefix(value, ">") // "=>" is "=" (an object definition)
	if key == "" || strings.ContainsAny(key, " \t") {
		return "", "", false
	}
	return key, strings.TrimSpace(value), true
}

func (p *parser) category(line string, pos Pos) error {
	end := strings.IndexByte(line, ']')
	if end < 0 {
		return fmt.Errorf("%s: %q: no closing ]", pos, line)
	}
	name := strings.TrimSpace(line[1:end])
	if name == "" {
		return fmt.Errorf("%s: empty category name", pos)
	}
	rest := strings.TrimSpace(line[end+1:])
	s := &Section{Name: name, Pos: pos}
	var add bool
	if rest != "" {
		if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
			return fmt.Errorf("%s: %q after [%s]: want (options)", pos, rest, name)
		}
		for _, opt := range strings.Split(rest[1:len(rest)-1], ",") {
			opt = strings.TrimSpace(opt)
			switch opt {
			case "":
			case "!":
				s.Template = true
			case "+":
				add = true
			default:
				tpl, ok := p.byName[opt]
				if !ok {
					return fmt.Errorf("%s: [%s] inherits from %q, which is not defined above", pos, name, opt)
				}
				s.Entries = append(s.Entries, tpl.Entries...)
			}
		}
	}
	if add {
		prev, ok := p.byName[name]
		if !ok {
			return fmt.Errorf("%s: [%s](+) adds to a category that is not defined above", pos, name)
		}
		p.cur = prev
		return nil
	}
	p.f.Sections = append(p.f.Sections, s)
	p.byName[name] = s
	p.cur = s
	return nil
}
