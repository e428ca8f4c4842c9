package config

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// unknownKeys lists, with their YAML paths, the keys of a config file that name no setting
// (a typo such as client_api.registration_disabeld, or a key of another version), in the
// order they appear. They are reported, not refused: tools that write configs for several
// versions of the server (the sytest driver) may set keys this version does not have.
func unknownKeys(b []byte) ([]string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	var out []string
	for _, n := range doc.Content {
		walkKeys(n, reflect.TypeOf(Dendrite{}), "", &out)
	}
	return out, nil
}

// walkKeys appends the keys under n that t has no field for.
func walkKeys(n *yaml.Node, t reflect.Type, path string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.AliasNode:
		walkKeys(n.Alias, t, path, out)
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, item := range n.Content {
			walkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), out)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct && t != durationType:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			p := key
			if path != "" {
				p = path + "." + key
			}
			f, ok := fieldByTag(t, key)
			if !ok {
				*out = append(*out, p)
				continue
			}
			walkKeys(n.Content[i+1], f.Type, p, out)
		}
	}
}

// fieldByTag is the field of struct type t whose yaml tag names key.
func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tag := strings.Split(f.Tag.Get("yaml"), ",")[0]; tag == key && tag != "-" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}
