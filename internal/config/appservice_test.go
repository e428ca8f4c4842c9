package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sytestRegistration is a registration file as sytest writes it (tests/05homeserver.pl):
// a non-exclusive namespace shared by every service, an exclusive one of its own.
func sytestRegistration(id, localpart, tokenChar string) string {
	return `id: ` + id + `
url: "https://localhost:1234/appservs/1"
as_token: "` + strings.Repeat(tokenChar, 32) + `"
hs_token: "` + strings.Repeat(tokenChar, 31) + `h"
sender_localpart: ` + localpart + `
namespaces:
  users:
    - regex: "@_.*:localhost:8448"
      exclusive: false
    - regex: "@astest-` + id + `-.*"
      exclusive: true
  aliases:
    - regex: "#astest-` + id + `-.*"
      exclusive: true
  rooms: []
protocols: [ymca]
`
}

// loadWith loads a config whose app_service_api.config_files are files with these contents.
func loadWith(t *testing.T, files ...string) (*Dendrite, error) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, content := range files {
		p := filepath.Join(dir, "as"+string(rune('0'+i))+".yaml")
		writeFile(t, p, content)
		paths = append(paths, p)
	}
	return LoadBytes([]byte("global:\n  server_name: localhost:8448\napp_service_api:\n  config_files: ["+strings.Join(paths, ", ")+"]\n"), nil)
}

// TestRegistrationFilesValidated: every broken registration file is refused at start-up
// with the YAML path of the problem; two services may not share an ID, a token, a sender or
// an exclusive regex; a valid file's namespaces match whole identifiers.
func TestRegistrationFilesValidated(t *testing.T) {
	good := sytestRegistration("AS-1", "as-user-1", "A")
	for _, tc := range []struct {
		name  string
		files []string
		want  string
	}{
		{"missing id", []string{strings.Replace(good, "id: AS-1", "id: ''", 1)}, ".id: must not be empty"},
		{"bad regex", []string{strings.Replace(good, `"@astest-AS-1-.*"`, `"@astest-(["`, 1)}, "namespaces.users[1].regex: is not a valid regular expression"},
		{"empty regex", []string{strings.Replace(good, `"#astest-AS-1-.*"`, `""`, 1)}, "namespaces.aliases[0].regex: must not be empty"},
		{"bad url", []string{strings.Replace(good, "https://localhost:1234/appservs/1", "ftp://x", 1)}, ".url: must be an http:// or https:// URL"},
		{"bad sender", []string{strings.Replace(good, "sender_localpart: as-user-1", "sender_localpart: Bad User", 1)}, ".sender_localpart: must be a valid"},
		{"same tokens", []string{strings.Replace(good, strings.Repeat("A", 31)+"h", strings.Repeat("A", 32), 1)}, ".hs_token: must differ from as_token"},
		{"not yaml", []string{"id: [unclosed"}, "is not a registration file"},
		{"duplicate id", []string{good, strings.Replace(sytestRegistration("AS-2", "as-user-2", "B"), "id: AS-2", "id: AS-1", 1)},
			"config_files[1]: id ("},
		{"duplicate as_token", []string{good, strings.ReplaceAll(sytestRegistration("AS-2", "as-user-2", "B"), strings.Repeat("B", 32), strings.Repeat("A", 32))},
			"config_files[1]: as_token ("},
		{"duplicate sender", []string{good, sytestRegistration("AS-2", "as-user-1", "B")}, "config_files[1]: sender ("},
		{"same exclusive regex", []string{good, strings.ReplaceAll(sytestRegistration("AS-2", "as-user-2", "B"), "@astest-AS-2-", "@astest-AS-1-")},
			"config_files[1]: exclusive users regex ("},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadWith(t, tc.files...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), strings.Repeat("A", 32)) {
				t.Fatalf("a token appears in the error: %v", err)
			}
		})
	}
	t.Run("unreadable file", func(t *testing.T) {
		_, err := LoadBytes([]byte("app_service_api:\n  config_files: [/nonexistent/as.yaml]\n"), nil)
		if err == nil || !strings.Contains(err.Error(), "app_service_api.config_files[0]: cannot read") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("valid", func(t *testing.T) {
		c, err := loadWith(t, good, sytestRegistration("AS-2", "as-user-2", "B"), "id: bot\nurl: null\nas_token: x\nhs_token: y\nsender_localpart: bot\nrate_limited: false\n")
		if err != nil {
			t.Fatal(err)
		}
		regs := c.AppServiceAPI.Registrations
		if len(regs) != 3 {
			t.Fatalf("%d registrations", len(regs))
		}
		a, bot := regs[0], regs[2]
		checks := map[string]bool{
			"sender owned":             a.OwnsUserID("@as-user-1:localhost:8448"),
			"shared namespace owned":   a.OwnsUserID("@_x:localhost:8448"),
			"shared not exclusive":     !a.ExclusiveUserID("@_x:localhost:8448"),
			"exclusive":                a.ExclusiveUserID("@astest-AS-1-x:localhost:8448"),
			"anchored at the start":    !a.OwnsUserID("x@astest-AS-1-y:localhost:8448"),
			"other server not shared":  !a.OwnsUserID("@_x:elsewhere"),
			"alias exclusive":          a.ExclusiveAlias("#astest-AS-1-room:localhost:8448"),
			"other alias":              !a.OwnsAlias("#room:localhost:8448"),
			"rate limited by default":  a.IsRateLimited(),
			"rate_limited false":       !bot.IsRateLimited(),
			"null url":                 bot.URL == "",
			"protocol":                 a.HasProtocol("ymca") && !bot.HasProtocol("ymca"),
			"found by token":           c.AppServiceAPI.AppServiceByToken(strings.Repeat("B", 32)) == regs[1],
			"unknown token":            c.AppServiceAPI.AppServiceByToken("nope") == nil,
			"hs_token is not as_token": c.AppServiceAPI.AppServiceByToken(strings.Repeat("A", 31)+"h") == nil,
		}
		for name, ok := range checks {
			if !ok {
				t.Errorf("%s: wrong", name)
			}
		}
	})
}
