package pushserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/pushserver"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// newServer serves the push server's routes over loopback; the token "tok-X" is the
// device D of @X:test.
func newServer(t *testing.T, db *sqlutil.DB) string {
	t.Helper()
	lookup := func(_ context.Context, token string) (*uapi.Device, error) {
		if len(token) < 5 || token[:4] != "tok-" {
			return nil, matrixerr.UnknownToken("unknown access token")
		}
		return &uapi.Device{UserID: "@" + token[4:] + ":test", DeviceID: "D"}, nil
	}
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	s, err := pushserver.New(context.Background(), pushserver.Deps{Cfg: &config.PushServer{}, DB: db, DeviceLookup: lookup,
		Logger: logrus.NewEntry(logger)})
	if err != nil {
		t.Fatal(err)
	}
	router := mux.NewRouter().UseEncodedPath()
	srv := &httputil.Server{Component: "test", Logger: logrus.NewEntry(logger), MaxBodyBytes: 1 << 20}
	srv.Register(router, s.Routes())
	hs := httptest.NewServer(router)
	t.Cleanup(hs.Close)
	return hs.URL
}

func call(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // nolint: errcheck // read below
	out := map[string]any{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func pusher(key, url string) map[string]any {
	return map[string]any{"pushkey": key, "kind": "http", "app_id": "app", "app_display_name": "App",
		"device_display_name": "Phone", "profile_tag": "tag", "lang": "en", "data": map[string]any{"url": url, "format": "event_id_only", "x": 1}}
}

func keys(t *testing.T, base, token string) []string {
	t.Helper()
	code, res := call(t, "GET", base+"/_matrix/client/v3/pushers", token, nil)
	if code != 200 {
		t.Fatalf("GET /pushers: %d %v", code, res)
	}
	var out []string
	for _, p := range res["pushers"].([]any) {
		out = append(out, p.(map[string]any)["pushkey"].(string))
	}
	return out
}

func TestPushers(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		base := newServer(t, db)
		set := base + "/_matrix/client/v3/pushers/set"
		gw := "https://push.example.org/_matrix/push/v1/notify"
		if code, res := call(t, "POST", set, "tok-alice", pusher("k1", gw)); code != 200 {
			t.Fatalf("set: %d %v", code, res)
		}
		code, res := call(t, "GET", base+"/_matrix/client/v3/pushers", "tok-alice", nil)
		got, _ := json.Marshal(res)
		if code != 200 || !bytes.Contains(got, []byte(`"profile_tag":"tag"`)) || !bytes.Contains(got, []byte(`"x":1`)) {
			t.Fatalf("GET /pushers: %d %s", code, got)
		}
		// Bob takes over k1 without append; with append both keep it.
		call(t, "POST", set, "tok-bob", pusher("k1", gw))
		if k := keys(t, base, "tok-alice"); len(k) != 0 {
			t.Fatalf("alice's pushers after bob took k1: %v", k)
		}
		p := pusher("k1", gw)
		p["append"] = true
		call(t, "POST", set, "tok-alice", p)
		if a, b := keys(t, base, "tok-alice"), keys(t, base, "tok-bob"); len(a) != 1 || len(b) != 1 {
			t.Fatalf("after append: alice %v bob %v", a, b)
		}
		call(t, "POST", set, "tok-alice", pusher("k2", "http://127.0.0.1:9/_matrix/push/v1/notify"))
		if k := keys(t, base, "tok-alice"); len(k) != 2 {
			t.Fatalf("two pushers: %v", k)
		}
		del := map[string]any{"pushkey": "k1", "app_id": "app", "kind": nil}
		if code, res := call(t, "POST", set, "tok-alice", del); code != 200 {
			t.Fatalf("delete: %d %v", code, res)
		}
		if k := keys(t, base, "tok-alice"); len(k) != 1 || k[0] != "k2" {
			t.Fatalf("after delete: %v", k)
		}

		bad := func(mut func(p map[string]any), code string) {
			t.Helper()
			p := pusher("k3", gw)
			mut(p)
			if status, res := call(t, "POST", set, "tok-alice", p); status != 400 || res["errcode"] != code {
				t.Fatalf("%v: %d %v", p, status, res)
			}
		}
		url := func(u string) func(p map[string]any) {
			return func(p map[string]any) { p["data"] = map[string]any{"url": u} }
		}
		bad(url("ftp://push.example.org/_matrix/push/v1/notify"), "M_INVALID_PARAM")
		bad(url("https:///_matrix/push/v1/notify"), "M_INVALID_PARAM")
		bad(url("https://push.example.org/notify"), "M_INVALID_PARAM")
		bad(url("not a url"), "M_INVALID_PARAM")
		bad(func(p map[string]any) { p["data"] = map[string]any{} }, "M_MISSING_PARAM")
		bad(func(p map[string]any) { delete(p, "app_display_name") }, "M_MISSING_PARAM")
		bad(func(p map[string]any) { delete(p, "pushkey") }, "M_MISSING_PARAM")
		bad(func(p map[string]any) { p["kind"] = "email" }, "M_INVALID_PARAM")
		bad(func(p map[string]any) { p["app_id"] = strings.Repeat("a", 65) }, "M_INVALID_PARAM")
		bad(func(p map[string]any) { p["data"] = "x" }, "M_BAD_JSON")
		bad(func(p map[string]any) { p["append"] = "yes" }, "M_BAD_JSON")
		if status, _ := call(t, "GET", base+"/_matrix/client/v3/pushers", "nope", nil); status != 401 {
			t.Fatalf("no token: %d", status)
		}
	})
}
