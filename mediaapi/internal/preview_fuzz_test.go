package internal

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseHTML: whatever a page holds, the preview has at most maxOGProperties
// properties, each an og: key (valid UTF-8, at most maxOGKey bytes) with a valid UTF-8 value of at most maxOGValue runes.
func FuzzParseHTML(f *testing.F) {
	f.Add(`<html><head><title>T</title><meta property="og:title" content="x"><meta name="description" content="d"></head></html>`)
	f.Add("<meta property=\"og:a\" content=\"\xff\xfe\"><title>\xc3")
	f.Add("<meta property=\"og:\xff" + strings.Repeat("k", 200) + "\" content=v>")
	f.Add(`<title>` + strings.Repeat("<meta property=og:x content=y>", 60))
	f.Fuzz(func(t *testing.T, page string) {
		p := ParseHTML(strings.NewReader(page))
		if len(p) > maxOGProperties {
			t.Fatalf("%d properties", len(p))
		}
		for k, v := range p {
			s, ok := v.(string)
			if !strings.HasPrefix(k, "og:") || len(k) > maxOGKey || !utf8.ValidString(k) || !ok || !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxOGValue {
				t.Fatalf("property %q = %q", k, v)
			}
		}
	})
}
