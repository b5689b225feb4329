package config

import (
	"reflect"
	"strconv"
)

// Diff lists the key paths whose values differ between two configurations,
// in file order ("log.level", "sip.listeners[0].listen"). A list that grew
// or shrank names the entries past the shorter one ("peers[2]"). Secrets
// are compared, never shown: only their paths appear.
func Diff(a, b File) []string {
	var out []string
	diffValue(reflect.ValueOf(a), reflect.ValueOf(b), "", &out)
	return out
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func diffValue(a, b reflect.Value, path string, out *[]string) {
	switch a.Kind() {
	case reflect.Struct:
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, inline := yamlName(f)
			switch {
			case inline:
				diffValue(a.Field(i), b.Field(i), path, out)
			case name != "":
				diffValue(a.Field(i), b.Field(i), joinKey(path, name), out)
			}
		}
	case reflect.Slice, reflect.Array:
		n := min(a.Len(), b.Len())
		for i := 0; i < n; i++ {
			diffValue(a.Index(i), b.Index(i), path+"["+strconv.Itoa(i)+"]", out)
		}
		for i := n; i < max(a.Len(), b.Len()); i++ {
			*out = append(*out, path+"["+strconv.Itoa(i)+"]")
		}
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, path)
			}
			return
		}
		diffValue(a.Elem(), b.Elem(), path, out)
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
	}
}
