package openid

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tokens, now := New(key), time.Now()
	tok := tokens.Issue("@alice:example.org", now)
	if u, ok := tokens.Verify(tok, now); !ok || u != "@alice:example.org" {
		t.Fatalf("fresh token: %q %v", u, ok)
	}
	if u, ok := tokens.Verify(tok, now.Add(Lifetime-time.Second)); !ok || u != "@alice:example.org" {
		t.Fatalf("token just before expiry: %q %v", u, ok)
	}
	p, m, _ := strings.Cut(tok, ".")
	forged := New(key).Issue("@mallory:example.org", now)
	fp, _, _ := strings.Cut(forged, ".")
	for name, bad := range map[string]string{
		"expired":            tok,
		"other server's key": New(other).Issue("@alice:example.org", now),
		"payload swapped":    fp + "." + m,
		"no mac":             p,
		"empty":              "",
		"not base64":         "an/invalid/token",
		"mac cut short":      p + "." + m[:10],
	} {
		at := now
		if name == "expired" {
			at = now.Add(Lifetime)
		}
		if u, ok := tokens.Verify(bad, at); ok {
			t.Errorf("%s: accepted for %q", name, u)
		}
	}
}
