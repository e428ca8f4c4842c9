package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment override: DENDRITE_<YAML_PATH_UPPER>, path segments
// joined by "_", e.g. DENDRITE_CLIENT_API_REGISTRATION_SHARED_SECRET.
const EnvPrefix = "DENDRITE_"

// applyEnv sets every key named by an override. Keys are matched on their full YAML path,
// so overlapping names cannot be confused.
func applyEnv(c *Dendrite, env []string) error {
	fields := map[string]reflect.Value{}
	collect(reflect.ValueOf(c).Elem(), "", fields)
	for _, kv := range env {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		v, ok := fields[strings.TrimPrefix(name, EnvPrefix)]
		if !ok {
			continue
		}
		if err := setValue(v, value); err != nil {
			return fmt.Errorf("environment %s: %w", name, err)
		}
	}
	return nil
}

// collect maps upper-case underscore paths to settable leaf fields.
func collect(v reflect.Value, prefix string, out map[string]reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		path := strings.ToUpper(tag)
		if prefix != "" {
			path = prefix + "_" + path
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct {
			collect(f, path, out)
			continue
		}
		out[path] = f
	}
}

var durationType = reflect.TypeOf(Duration(0))

func setValue(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return errNoField
		}
		parts := []string{} // set but empty is an empty list, not an absent key
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return errNoField
	}
	return nil
}
