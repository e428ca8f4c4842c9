package routing_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// FuzzAccountRequests sends arbitrary bodies to the unauthenticated account endpoints:
// every answer must be a client error (or a success for a body that happens to be a valid
// request), never a server error.
func FuzzAccountRequests(f *testing.F) {
	db, err := sqlutil.Open("file:" + filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
	e := newEnv(f, db, openCfg())
	seeds := []string{
		``, `{`, `[]`, `null`, `"x"`, `{"username": 5}`, `{"username": "a", "password": "p"}`,
		`{"username": "a", "password": "p", "auth": {"type": "m.login.dummy"}}`,
		`{"username": "A B", "password": "p", "auth": {"type": "m.login.dummy"}, "device_id": ""}`,
		`{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@a:test.local"}, "password": "p"}`,
		`{"type": "m.login.password", "user": "@:", "password": null}`,
		`{"type": "m.login.password", "identifier": null, "device_id": 1}`,
		`{"nonce": "x", "username": "a", "password": "p", "mac": "zz"}`,
		`{"auth": {"type": "m.login.dummy", "session": {}}}`,
	}
	paths := []string{v3 + "/register", v3 + "/login", "/_synapse/admin/v1/register"}
	for _, s := range seeds {
		for i := range paths {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		path := paths[int(which)%len(paths)]
		resp, err := http.Post(e.url+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // only the status matters
		if resp.StatusCode >= 500 || (resp.StatusCode >= 200 && resp.StatusCode < 400 && resp.StatusCode != http.StatusOK) {
			t.Fatalf("POST %s %q: status %d", path, body, resp.StatusCode)
		}
	})
}
