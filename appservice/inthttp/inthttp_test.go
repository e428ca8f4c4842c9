package inthttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/appservice/api"
	"github.com/matrix-org/dendrite/appservice/internal"
	"github.com/matrix-org/dendrite/appservice/inthttp"
	"github.com/matrix-org/dendrite/internal/config"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// TestEveryMethodServed fails when a method is added to api.QueryAPI and not to Register.
func TestEveryMethodServed(t *testing.T) {
	srv := inthttp.Register(mux.NewRouter(), (*inthttp.Client)(nil), ihttp.ServerOptions{})
	want, err := ihttp.Methods(reflect.TypeFor[api.QueryAPI]())
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Methods(); !slices.Equal(got, want) {
		t.Fatalf("served %v, api.QueryAPI has %v", got, want)
	}
}

// TestEveryMethodOverHTTP: each method through the internal HTTP client answers as the
// implementation does, against an application service on loopback, and a ping's Matrix
// error keeps its code across the wire.
func TestEveryMethodOverHTTP(t *testing.T) {
	as := http.NewServeMux()
	as.HandleFunc("GET /_matrix/app/v1/users/{user}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("user") != "@bridge_known:hs" {
			w.WriteHeader(http.StatusNotFound)
		}
		_, _ = w.Write([]byte("{}")) // the status is the answer
	})
	as.HandleFunc("GET /_matrix/app/v1/thirdparty/protocol/irc", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"user_fields":["nick"],"instances":[{"desc":"Libera","network_id":"libera"}]}`)) // test answer
	})
	as.HandleFunc("GET /_matrix/app/v1/thirdparty/user/irc", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`[{"userid":"@bridge_` + r.URL.Query().Get("nick") + `:hs","protocol":"irc","fields":{}}]`)) // test answer
	})
	as.HandleFunc("POST /_matrix/app/v1/ping", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("{}")) // test answer
	})
	srv := httptest.NewServer(as)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	files := map[string]string{
		"bridge.yaml": "id: bridge\nurl: " + srv.URL + "\nas_token: a\nhs_token: h\nsender_localpart: bot\nprotocols: [irc]\nnamespaces:\n  users: [{exclusive: true, regex: '@bridge_.*:hs'}]\n  aliases: [{exclusive: true, regex: '#bridge_.*:hs'}]\n",
		"nourl.yaml":  "id: nourl\nurl: null\nas_token: a2\nhs_token: h2\nsender_localpart: bot2\n",
	}
	cfg := config.Defaults()
	cfg.Global.ServerName = "hs"
	for name, content := range files {
		p := dir + "/" + name
		if err := writeFile(p, content); err != nil {
			t.Fatal(err)
		}
		cfg.AppServiceAPI.ConfigFiles = append(cfg.AppServiceAPI.ConfigFiles, p)
	}
	slices.Sort(cfg.AppServiceAPI.ConfigFiles)
	if err := cfg.Verify(); err != nil {
		t.Fatal(err)
	}
	impl := internal.NewQueries(internal.NewClient(5*time.Second, false), cfg.AppServiceAPI.Registrations, logrus.NewEntry(logrus.New()), nil)
	router := mux.NewRouter()
	inthttp.Register(router, impl, ihttp.ServerOptions{Logger: logrus.NewEntry(logrus.New())})
	hs := httptest.NewServer(router)
	t.Cleanup(hs.Close)
	c := inthttp.NewClient(hs.URL, ihttp.ClientOptions{})
	ctx := context.Background()

	for user, want := range map[string]bool{"@bridge_known:hs": true, "@bridge_unknown:hs": false, "@other:hs": false} {
		res, err := c.QueryUserIDExists(ctx, &api.QueryUserIDExistsRequest{UserID: user})
		if err != nil || res.Exists != want {
			t.Errorf("user %s: %+v %v", user, res, err)
		}
	}
	if res, err := c.QueryRoomAliasExists(ctx, &api.QueryRoomAliasExistsRequest{Alias: "#bridge_x:hs"}); err != nil || res.Exists {
		t.Errorf("alias: %+v %v", res, err)
	}
	protocols, err := c.QueryProtocols(ctx, &api.QueryProtocolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var irc struct {
		Instances []map[string]string `json:"instances"`
	}
	if err = json.Unmarshal(protocols.Protocols["irc"], &irc); err != nil || len(irc.Instances) != 1 || irc.Instances[0]["instance_id"] != "bridge|libera" {
		t.Errorf("protocols %s %v", protocols.Protocols["irc"], err)
	}
	users, err := c.QueryThirdParty(ctx, &api.QueryThirdPartyRequest{Kind: api.ThirdPartyUser, Protocol: "irc", Query: map[string][]string{"nick": {"alice"}}})
	if err != nil || !users.Found || string(users.Result) != `[{"userid":"@bridge_alice:hs","protocol":"irc","fields":{}}]` {
		t.Errorf("third-party users %+v %v", users, err)
	}
	if none, err := c.QueryThirdParty(ctx, &api.QueryThirdPartyRequest{Kind: api.ThirdPartyProtocol, Protocol: "xmpp"}); err != nil || none.Found {
		t.Errorf("unknown protocol %+v %v", none, err)
	}
	if _, err = c.PerformPing(ctx, &api.PerformPingRequest{ServiceID: "bridge", TransactionID: "t"}); err != nil {
		t.Errorf("ping: %v", err)
	}
	_, err = c.PerformPing(ctx, &api.PerformPingRequest{ServiceID: "nourl"})
	var merr *matrixerr.Error
	if !errors.As(err, &merr) || merr.Code != "M_URL_NOT_SET" || merr.Status != http.StatusBadRequest {
		t.Errorf("ping without url: %v", err)
	}
}

func writeFile(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o600)
}
