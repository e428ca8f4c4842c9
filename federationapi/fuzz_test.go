package federationapi_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzFederationRequests sends arbitrary notary queries and X-Matrix headers: every answer
// is a success or a client error (401 for a bad signature), never a server error.
func FuzzFederationRequests(f *testing.F) {
	a := newNode(f, "file:"+filepath.Join(f.TempDir(), "fuzz.db"), &clock{}, nodeOpts{})
	for _, s := range []string{
		``, `{`, `[]`, `null`, `{}`, `{"server_keys": null}`, `{"server_keys": {}}`, `{"server_keys": []}`,
		`{"server_keys": {"bad name!": {}}}`, `{"server_keys": {"` + string(a.name) + `": {"ed25519:x": {"minimum_valid_until_ts": -1}}}}`,
		`{"server_keys": {"` + string(a.name) + `": {"": {"minimum_valid_until_ts": "x"}}}}`,
	} {
		f.Add(true, s)
	}
	for _, h := range []string{
		``, `X-Matrix`, `X-Matrix origin=`, `Bearer x`, `X-Matrix origin="127.0.0.1:1",key="ed25519:a",sig="abc"`,
		`X-Matrix origin="bad name!",key="ed25519:a",sig="abc"`, `X-Matrix origin="127.0.0.1:1",destination="x",key="k",sig="s"`,
		`X-Matrix origin=127.0.0.1:1,key=ed25519:a,sig=AAAA,destination=` + string(a.name),
	} {
		f.Add(false, h)
	}
	client := a.srv.Client()
	f.Fuzz(func(t *testing.T, notary bool, s string) {
		var req *http.Request
		if notary {
			req, _ = http.NewRequest(http.MethodPost, a.srv.URL+"/_matrix/key/v2/query", strings.NewReader(s))
		} else {
			req, _ = http.NewRequest(http.MethodGet, a.srv.URL+"/_matrix/federation/v1/query/profile?user_id=@a:"+string(a.name), nil)
			if strings.ContainsFunc(s, func(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }) {
				return // not a header value net/http would send
			}
			req.Header.Set("Authorization", s)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // only the status matters
		// A header that fails authentication is 401; one whose origin is no server name, 400.
		if resp.StatusCode >= 500 || (!notary && resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusBadRequest) {
			t.Fatalf("notary=%v %q: status %d", notary, s, resp.StatusCode)
		}
	})
}
