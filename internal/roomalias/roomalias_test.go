package roomalias

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, s := range []string{"#a:example.org", "#room:127.0.0.1:8448", "#über-raum:[::1]:8448", "#a.b_c=d:x"} {
		a, err := Parse(s)
		if err != nil || a.String() != s {
			t.Errorf("%q: %+v %v", s, a, err)
		}
	}
	for _, s := range []string{"", "#", "a:b", "#:x", "#a", "#a:", "#a:bad host", "#a\x00:x", "!a:x", "#a:" + strings.Repeat("x", 255), "#\xff:x"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// FuzzParse: whatever Parse accepts prints back as itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"#a:example.org", "#a:[::1]:80", "#:", "#a:b:c", "#\x00:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if a, err := Parse(s); err == nil && a.String() != s {
			t.Fatalf("%q parsed as %+v", s, a)
		}
	})
}
