package mgcp

import (
	"encoding/json"
	"reflect"
	"regexp"
	"testing"
)

// TestJSONKeysSnakeCase: every exported field of the message types the
// API shows has a snake_case JSON name.
func TestJSONKeysSnakeCase(t *testing.T) {
	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(ty reflect.Type) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Array || ty.Kind() == reflect.Map {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] || ty.PkgPath() != reflect.TypeOf(Response{}).PkgPath() {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			f := ty.Field(i)
			if !f.IsExported() {
				continue
			}
			if _, ok := reflect.New(ty).Interface().(json.Marshaler); ok {
				continue
			}
			name := f.Tag.Get("json")
			if name == "-" {
				continue
			}
			if i := len(name); i > 0 {
				for j, c := range name {
					if c == ',' {
						name = name[:j]
						break
					}
				}
			}
			if f.Anonymous && name == "" {
				walk(f.Type)
				continue
			}
			if !snake.MatchString(name) {
				t.Errorf("%s.%s has JSON name %q", ty.Name(), f.Name, name)
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeOf(Response{}))
	walk(reflect.TypeOf(Command{}))
}
