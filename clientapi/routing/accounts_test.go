package routing_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/clientapi/routing"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/userapi"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

const (
	serverName = "test.local"
	secret     = "s3cret"
	v3         = "/_matrix/client/v3"
)

// env is a client API with the account routes and a real userapi, over loopback HTTP.
type env struct {
	t   testing.TB
	url string
	db  *sqlutil.DB
	// users is the userapi behind the routes.
	users uapi.ClientUserAPI

	mu      sync.Mutex
	changed []string
}

func newEnv(t testing.TB, db *sqlutil.DB, cfg config.ClientAPI) *env {
	t.Helper()
	ua, err := userapi.New(context.Background(), userapi.Deps{Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: serverName, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, users: ua.API()}
	acc := &routing.Accounts{Cfg: &cfg, ServerName: serverName, UserAPI: ua.API(), ProfileChanged: func(_ context.Context, userID string) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.changed = append(e.changed, userID)
		return nil
	}}
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	router := mux.NewRouter().UseEncodedPath()
	srv := &httputil.Server{Component: "test", Logger: logrus.NewEntry(logger), MaxBodyBytes: 1 << 20}
	srv.Register(router, acc.Routes())
	hs := httptest.NewServer(router)
	t.Cleanup(hs.Close)
	e.url = hs.URL
	return e
}

func openCfg() config.ClientAPI {
	return config.ClientAPI{RegistrationSharedSecret: secret, GuestsDisabled: true}
}

// do sends body (a string is sent as is, anything else as JSON) and decodes the answer.
func (e *env) do(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close() // nolint: errcheck // the body was read
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]any{}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s %s: bad JSON %s", method, path, raw)
		}
	}
	return resp.StatusCode, out
}

// want checks status and, when code is set, the errcode.
func (e *env) want(method, path, token string, body any, status int, code string) map[string]any {
	e.t.Helper()
	got, res := e.do(method, path, token, body)
	if got != status || (code != "" && res["errcode"] != code) {
		e.t.Fatalf("%s %s: want %d %s, got %d %v", method, path, status, code, got, res)
	}
	return res
}

// register registers with the dummy flow and returns user ID and token.
func (e *env) register(username, password string) (string, string) {
	e.t.Helper()
	res := e.want("POST", v3+"/register", "", map[string]any{"username": username, "password": password}, 401, "")
	res = e.want("POST", v3+"/register", "", map[string]any{"username": username, "password": password,
		"auth": map[string]any{"type": "m.login.dummy", "session": res["session"]}}, 200, "")
	return res["user_id"].(string), res["access_token"].(string)
}

func (e *env) accountCount() int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow("SELECT COUNT(*) FROM userapi_accounts").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestRegister(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		res := e.want("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "pw"}, 401, "")
		flows, _ := json.Marshal(res["flows"])
		if string(flows) != `[{"stages":["m.login.dummy"]}]` || res["session"] == "" || res["params"] == nil {
			t.Fatalf("UIA answer %v", res)
		}
		userID, token := e.register("alice", "pw")
		if userID != "@alice:"+serverName || !strings.HasPrefix(token, "syt_") {
			t.Fatalf("registered %s %s", userID, token)
		}
		who := e.want("GET", "/_matrix/client/r0/account/whoami", token, nil, 200, "")
		if who["user_id"] != userID || who["device_id"] == "" || who["is_guest"] != false {
			t.Fatalf("whoami %v", who)
		}
		dummy := map[string]any{"type": "m.login.dummy"}
		res = e.want("POST", v3+"/register", "", map[string]any{"username": "bob", "password": "pw", "inhibit_login": true, "auth": dummy}, 200, "")
		if res["user_id"] != "@bob:"+serverName || res["access_token"] != nil || res["device_id"] != nil {
			t.Fatalf("inhibit_login answer %v", res)
		}
		res = e.want("POST", v3+"/register", "", map[string]any{"password": "pw", "auth": dummy}, 200, "")
		if !strings.HasSuffix(res["user_id"].(string), ":"+serverName) {
			t.Fatalf("generated user %v", res)
		}
		before := e.accountCount()
		e.want("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "pw", "auth": dummy}, 400, "M_USER_IN_USE")
		e.want("POST", v3+"/register", "", map[string]any{"username": "Not Valid!", "password": "pw", "auth": dummy}, 400, "M_INVALID_USERNAME")
		e.want("POST", v3+"/register", "", map[string]any{"username": "carol", "auth": dummy}, 400, "M_MISSING_PARAM")
		e.want("POST", v3+"/register", "", map[string]any{"username": "carol", "password": strings.Repeat("x", 513), "auth": dummy}, 400, "M_INVALID_PARAM")
		e.want("POST", v3+"/register", "", map[string]any{"username": "carol", "password": "pw", "auth": map[string]any{"type": "m.login.bogus"}}, 400, "M_UNKNOWN")
		e.want("POST", v3+"/register", "", map[string]any{"username": "carol", "password": "pw", "device_id": strings.Repeat("D", 300), "auth": dummy}, 400, "M_INVALID_PARAM")
		e.want("POST", v3+"/register", "", "{not json", 400, "M_NOT_JSON")
		e.want("POST", v3+"/register", "", `{"username": 5}`, 400, "M_BAD_JSON")
		e.want("POST", v3+"/register", "", `{"username": "carol", "password": "pw", "auth": "dummy"}`, 400, "M_BAD_JSON")
		if after := e.accountCount(); after != before {
			t.Fatalf("failed registrations stored accounts: %d -> %d", before, after)
		}

		e.want("GET", v3+"/register/available?username=alice", "", nil, 400, "M_USER_IN_USE")
		e.want("GET", v3+"/register/available?username=Bad%20Name", "", nil, 400, "M_INVALID_USERNAME")
		e.want("GET", v3+"/register/available", "", nil, 400, "M_MISSING_PARAM")
		if res = e.want("GET", v3+"/register/available?username=dave", "", nil, 200, ""); res["available"] != true {
			t.Fatalf("available %v", res)
		}
	})
}

// TestRegisterSession: a registration's UIA session starts from any request without an auth
// type (even {}), keeps that request's parameters for the completing request, and
// completing it twice registers one account.
func TestRegisterSession(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		res := e.want("POST", v3+"/register", "", map[string]any{}, 401, "")
		flows, _ := json.Marshal(res["flows"])
		if string(flows) != `[{"stages":["m.login.dummy"]}]` || res["session"] == nil || res["session"] == "" {
			t.Fatalf("UIA answer to {} %v", res)
		}
		// The empty session takes its parameters from the completing request.
		res = e.want("POST", v3+"/register", "", map[string]any{"username": "Grace", "password": "pw",
			"auth": map[string]any{"type": "m.login.dummy", "session": res["session"]}}, 200, "")
		if res["user_id"] != "@grace:"+serverName || res["access_token"] == nil {
			t.Fatalf("registration completing an empty session %v", res)
		}

		complete := func(session any) map[string]any {
			t.Helper()
			return e.want("POST", v3+"/register", "", map[string]any{"auth": map[string]any{"type": "m.login.dummy", "session": session}}, 200, "")
		}
		first := e.want("POST", v3+"/register", "", map[string]any{"username": "frank", "password": "pw",
			"device_id": "xyzzy", "initial_device_display_name": "phone"}, 401, "")
		res = complete(first["session"])
		if res["user_id"] != "@frank:"+serverName || res["device_id"] != "xyzzy" {
			t.Fatalf("registration did not keep the first request's parameters: %v", res)
		}
		devices := e.want("GET", v3+"/devices", res["access_token"].(string), nil, 200, "")
		if b, _ := json.Marshal(devices["devices"]); !strings.Contains(string(b), `"display_name":"phone"`) {
			t.Fatalf("devices %s", b)
		}
		e.want("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "frank"}, "password": "pw"}, 200, "")

		before := e.accountCount()
		if again := complete(first["session"]); again["user_id"] != "@frank:"+serverName || again["access_token"] == nil {
			t.Fatalf("repeated completion %v", again)
		}
		anon := e.want("POST", v3+"/register", "", map[string]any{"password": "pw"}, 401, "")
		generated := complete(anon["session"])["user_id"]
		if again := complete(anon["session"])["user_id"]; again != generated {
			t.Fatalf("repeated completion registered %v, then %v", generated, again)
		}
		if after := e.accountCount(); after != before+1 {
			t.Fatalf("repeated completions stored %d accounts, want 1", after-before)
		}

		inhibit := e.want("POST", v3+"/register", "", map[string]any{"username": "heidi", "password": "pw", "inhibit_login": true}, 401, "")
		if res = complete(inhibit["session"]); res["user_id"] != "@heidi:"+serverName || res["access_token"] != nil || res["device_id"] != nil {
			t.Fatalf("inhibit_login kept by the session: %v", res)
		}

		// A first request that fails its checks starts no session.
		e.want("POST", v3+"/register", "", map[string]any{"username": "frank", "password": "pw"}, 400, "M_USER_IN_USE")
	})
}

func TestRegistrationDisabled(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		cfg := openCfg()
		cfg.RegistrationDisabled = true
		e := newEnv(t, db, cfg)
		e.want("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "pw"}, 403, "M_FORBIDDEN")
		e.want("POST", v3+"/register", "", map[string]any{"username": "alice", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}}, 403, "M_FORBIDDEN")
		if n := e.accountCount(); n != 0 {
			t.Fatalf("%d accounts exist", n)
		}
		// Shared-secret registration still works.
		e.sharedSecret("admin1", "pw", true, secret, 200, "")
	})
}

// sharedSecret registers through /_synapse/admin/v1/register with a MAC made from key.
func (e *env) sharedSecret(username, password string, admin bool, key string, status int, code string) map[string]any {
	e.t.Helper()
	nonce := e.want("GET", "/_synapse/admin/v1/register", "", nil, 200, "")["nonce"].(string)
	return e.want("POST", "/_synapse/admin/v1/register", "", sharedSecretBody(nonce, username, password, admin, key), status, code)
}

func sharedSecretBody(nonce, username, password string, admin bool, key string) map[string]any {
	m := hmac.New(sha1.New, []byte(key))
	adm := "notadmin"
	if admin {
		adm = "admin"
	}
	m.Write([]byte(nonce + "\x00" + username + "\x00" + password + "\x00" + adm))
	return map[string]any{"nonce": nonce, "username": username, "password": password, "admin": admin, "mac": hex.EncodeToString(m.Sum(nil))}
}

func TestSharedSecretRegistration(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		res := e.sharedSecret("alice", "pw", false, secret, 200, "")
		if res["user_id"] != "@alice:"+serverName || res["home_server"] != serverName || res["device_id"] == "" {
			t.Fatalf("shared-secret answer %v", res)
		}
		e.want("GET", v3+"/account/whoami", res["access_token"].(string), nil, 200, "")
		e.sharedSecret("bob", "pw", false, "wrong secret", 403, "M_FORBIDDEN")

		nonce := e.want("GET", "/_synapse/admin/v1/register", "", nil, 200, "")["nonce"].(string)
		body := sharedSecretBody(nonce, "carol", "pw", true, secret)
		body["admin"] = false // the MAC covered admin=true
		e.want("POST", "/_synapse/admin/v1/register", "", body, 403, "M_FORBIDDEN")
		// The nonce was spent by the failed attempt.
		e.want("POST", "/_synapse/admin/v1/register", "", sharedSecretBody(nonce, "carol", "pw", true, secret), 400, "M_UNKNOWN")

		nonce = e.want("GET", "/_synapse/admin/v1/register", "", nil, 200, "")["nonce"].(string)
		e.want("POST", "/_synapse/admin/v1/register", "", sharedSecretBody(nonce, "dave", "pw", false, secret), 200, "")
		e.want("POST", "/_synapse/admin/v1/register", "", sharedSecretBody(nonce, "erin", "pw", false, secret), 400, "M_UNKNOWN")
		e.want("POST", "/_synapse/admin/v1/register", "", sharedSecretBody("made-up", "erin", "pw", false, secret), 400, "M_UNKNOWN")
		e.sharedSecret("alice", "pw", false, secret, 400, "M_USER_IN_USE")
		if res = e.sharedSecret("Frank", "pw", false, secret, 200, ""); res["user_id"] != "@frank:"+serverName {
			t.Fatalf("shared-secret registration of Frank %v", res)
		}
		if n := e.accountCount(); n != 3 {
			t.Fatalf("want 3 accounts, have %d", n)
		}

		off := newEnv(t, db, config.ClientAPI{})
		off.want("GET", "/_synapse/admin/v1/register", "", nil, 403, "M_FORBIDDEN")
		off.want("POST", "/_synapse/admin/v1/register", "", sharedSecretBody(nonce, "x", "pw", false, ""), 403, "M_FORBIDDEN")
	})
}

// TestGuestRegistration: with client_api.guests_disabled kind=guest is refused with the
// spec's 403 M_FORBIDDEN and nothing is stored. Without it a guest registers with no
// authentication (even with registration closed), whoami says is_guest, endpoints outside
// the guest access module answer 403 M_GUEST_ACCESS_FORBIDDEN while listed ones work, and
// only the guest's own token upgrades it to a full account with the same user ID.
func TestGuestRegistration(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		cfg := openCfg()
		e := newEnv(t, db, cfg)
		before := e.accountCount()
		res := e.want("POST", v3+"/register?kind=guest", "", map[string]any{}, 403, "M_FORBIDDEN")
		if msg, _ := res["error"].(string); !strings.Contains(msg, "disabled") {
			t.Errorf("message %q", msg)
		}
		if after := e.accountCount(); after != before {
			t.Fatalf("guest registration stored an account")
		}

		cfg.GuestsDisabled, cfg.RegistrationDisabled = false, true
		e = newEnv(t, db, cfg)
		guest := e.want("POST", v3+"/register?kind=guest", "", map[string]any{"initial_device_display_name": "kiosk"}, 200, "")
		userID, token := guest["user_id"].(string), guest["access_token"].(string)
		if who := e.want("GET", v3+"/account/whoami", token, nil, 200, ""); who["user_id"] != userID || who["is_guest"] != true {
			t.Fatalf("guest whoami %v", who)
		}
		e.want("GET", v3+"/devices/"+guest["device_id"].(string), token, nil, 200, "")
		e.want("PUT", v3+"/profile/"+userID+"/displayname", token, map[string]any{"displayname": "creeper"}, 200, "")
		e.want("PUT", v3+"/profile/"+userID+"/avatar_url", token, map[string]any{"avatar_url": "mxc://x/y"}, 403, "M_GUEST_ACCESS_FORBIDDEN")
		e.want("GET", v3+"/user/"+userID+"/account_data/m.direct", token, nil, 403, "M_GUEST_ACCESS_FORBIDDEN")
		e.want("POST", v3+"/account/password", token, map[string]any{"new_password": "x"}, 403, "M_GUEST_ACCESS_FORBIDDEN")

		other := e.want("POST", v3+"/register?kind=guest", "", map[string]any{}, 200, "")
		// Upgrading is registering: it needs open registration.
		cfg.RegistrationDisabled = false
		e = newEnv(t, db, cfg)
		local := strings.TrimPrefix(strings.Split(userID, ":")[0], "@")
		upgrade := map[string]any{"username": local, "password": "SIR_Arthur", "guest_access_token": other["access_token"]}
		e.want("POST", v3+"/register", "", upgrade, 403, "M_FORBIDDEN")
		upgrade["guest_access_token"] = token
		e.want("POST", v3+"/register", "", upgrade, 401, "")
		upgrade["auth"] = map[string]any{"type": "m.login.dummy"}
		full := e.want("POST", v3+"/register", "", upgrade, 200, "")
		if full["user_id"] != userID {
			t.Fatalf("upgraded account %v, want %s", full, userID)
		}
		if who := e.want("GET", v3+"/account/whoami", full["access_token"].(string), nil, 200, ""); who["is_guest"] != false {
			t.Fatalf("upgraded whoami %v", who)
		}
		e.want("GET", v3+"/user/"+userID+"/account_data/m.direct", token, nil, 404, "M_NOT_FOUND")
		e.want("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": local, "password": "SIR_Arthur"}, 200, "")
		e.want("POST", v3+"/register", "", upgrade, 403, "M_FORBIDDEN")
	})
}

func TestLoginLogout(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		userID, first := e.register("alice", "pw")
		flows := e.want("GET", v3+"/login", "", nil, 200, "")
		if b, _ := json.Marshal(flows["flows"]); string(b) != `[{"type":"m.login.password"},{"type":"m.login.application_service"}]` {
			t.Fatalf("flows %s", b)
		}
		login := func(body map[string]any, status int, code string) map[string]any {
			t.Helper()
			return e.want("POST", v3+"/login", "", body, status, code)
		}
		ident := func(user string) map[string]any { return map[string]any{"type": "m.id.user", "user": user} }
		res := login(map[string]any{"type": "m.login.password", "identifier": ident("alice"), "password": "pw", "device_id": "DEV1", "initial_device_display_name": "laptop"}, 200, "")
		if res["user_id"] != userID || res["device_id"] != "DEV1" || res["home_server"] != serverName {
			t.Fatalf("login answer %v", res)
		}
		second := res["access_token"].(string)
		third := login(map[string]any{"type": "m.login.password", "identifier": ident(userID), "password": "pw"}, 200, "")["access_token"].(string)
		fourth := login(map[string]any{"type": "m.login.password", "user": "alice", "password": "pw"}, 200, "")["access_token"].(string)
		login(map[string]any{"type": "m.login.password", "identifier": ident("alice"), "password": "wrong"}, 403, "M_FORBIDDEN")
		login(map[string]any{"type": "m.login.password", "identifier": ident("nobody"), "password": "pw"}, 403, "M_FORBIDDEN")
		login(map[string]any{"type": "m.login.password", "identifier": ident("@alice:elsewhere"), "password": "pw"}, 403, "M_FORBIDDEN")
		login(map[string]any{"type": "m.login.token", "token": "x"}, 400, "M_UNKNOWN")
		login(map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.phone"}, "password": "pw"}, 400, "M_UNKNOWN")
		e.want("POST", v3+"/login", "", "[]", 400, "M_BAD_JSON")
		e.want("POST", v3+"/login", "", "", 400, "M_NOT_JSON")

		devs := e.want("GET", v3+"/devices", second, nil, 200, "")["devices"].([]any)
		if len(devs) != 4 {
			t.Fatalf("devices %v", devs)
		}
		dev := e.want("GET", v3+"/devices/DEV1", second, nil, 200, "")
		if dev["display_name"] != "laptop" || dev["last_seen_ip"] != "127.0.0.1" {
			t.Fatalf("device %v", dev)
		}
		e.want("PUT", v3+"/devices/DEV1", second, map[string]any{"display_name": "desk"}, 200, "")
		if dev = e.want("GET", v3+"/devices/DEV1", second, nil, 200, ""); dev["display_name"] != "desk" {
			t.Fatalf("renamed device %v", dev)
		}
		e.want("GET", v3+"/devices/NOPE", second, nil, 404, "M_NOT_FOUND")
		e.want("PUT", v3+"/devices/NOPE", second, map[string]any{"display_name": "x"}, 404, "M_NOT_FOUND")

		e.want("POST", v3+"/logout", second, map[string]any{}, 200, "")
		e.want("GET", v3+"/account/whoami", second, nil, 401, "M_UNKNOWN_TOKEN")
		e.want("GET", v3+"/account/whoami", first, nil, 200, "")
		e.want("POST", v3+"/logout/all", third, map[string]any{}, 200, "")
		for _, tok := range []string{first, third, fourth} {
			e.want("GET", v3+"/account/whoami", tok, nil, 401, "M_UNKNOWN_TOKEN")
		}
		e.want("GET", v3+"/account/whoami", "", nil, 401, "M_MISSING_TOKEN")
		e.want("GET", v3+"/account/whoami", "syt_made_up", nil, 401, "M_UNKNOWN_TOKEN")
	})
}

func TestLoginAttemptsLimitedPerAccount(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		e.register("alice", "pw")
		body := map[string]any{"type": "m.login.password", "user": "alice", "password": "guess"}
		limited := false
		for i := 0; i < 30 && !limited; i++ {
			code, _ := e.do("POST", v3+"/login", "", body)
			limited = code == http.StatusTooManyRequests
		}
		if !limited {
			t.Fatal("30 wrong passwords in a row were never limited")
		}
		body["password"] = "pw"
		e.want("POST", v3+"/login", "", body, 429, "M_LIMIT_EXCEEDED")
	})
}

// TestWhoIs: GET /admin/whois lists a user's devices with their last connection, for the
// user themself or an administrator; another user gets 403 M_FORBIDDEN, a remote user 404.
func TestWhoIs(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		alice := e.sharedSecret("alice", "pw", false, secret, 200, "")
		admin := e.sharedSecret("root", "pw", true, secret, 200, "")
		aliceID, aliceToken := alice["user_id"].(string), alice["access_token"].(string)
		for _, token := range []string{aliceToken, admin["access_token"].(string)} {
			res := e.want("GET", v3+"/admin/whois/"+aliceID, token, nil, 200, "")
			devices, _ := res["devices"].(map[string]any)
			dev, _ := devices[alice["device_id"].(string)].(map[string]any)
			sessions, _ := dev["sessions"].([]any)
			if res["user_id"] != aliceID || len(devices) != 1 || len(sessions) != 1 {
				t.Fatalf("whois %v", res)
			}
			conns, _ := sessions[0].(map[string]any)["connections"].([]any)
			if len(conns) != 1 || conns[0].(map[string]any)["ip"] != "127.0.0.1" {
				t.Fatalf("whois connections %v", conns)
			}
		}
		e.want("GET", v3+"/admin/whois/"+admin["user_id"].(string), aliceToken, nil, 403, "M_FORBIDDEN")
		e.want("GET", v3+"/admin/whois/@alice:elsewhere", admin["access_token"].(string), nil, 404, "M_NOT_FOUND")
	})
}

// TestDeactivateAccount: deactivation asks for the password (401 with the flows, then
// M_FORBIDDEN for a wrong one); afterwards the account's tokens and password no longer work
// and its user ID cannot be registered again.
func TestDeactivateAccount(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		_, token := e.register("alice", "pw")
		auth := func(password string) map[string]any {
			return map[string]any{"auth": map[string]any{"type": "m.login.password", "user": "alice", "password": password}}
		}
		if res := e.want("POST", v3+"/account/deactivate", token, map[string]any{}, 401, ""); res["flows"] == nil {
			t.Fatalf("no flows: %v", res)
		}
		if res := e.want("POST", v3+"/account/deactivate", token, auth("wrong"), 401, "M_FORBIDDEN"); res["flows"] == nil || res["completed"] == nil {
			t.Fatalf("wrong password answer %v", res)
		}
		e.want("GET", v3+"/account/whoami", token, nil, 200, "")
		if res := e.want("POST", v3+"/account/deactivate", token, auth("pw"), 200, ""); res["id_server_unbind_result"] != "no-support" {
			t.Fatalf("deactivate answer %v", res)
		}
		e.want("GET", v3+"/account/whoami", token, nil, 401, "M_UNKNOWN_TOKEN")
		e.want("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw"}, 403, "M_FORBIDDEN")
		e.want("GET", v3+"/register/available?username=alice", "", nil, 400, "M_USER_IN_USE")
	})
}

// TestDeactivateAccountErase: erase: true marks the account erased in the userapi (what
// readers ask before serving its events); a deactivation without it erases nothing, and
// an erase that is not a boolean is 400 M_BAD_JSON.
func TestDeactivateAccountErase(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		alice, aliceToken := e.register("alice", "pw")
		bob, bobToken := e.register("bob", "pw")
		auth := func(user string, erase any) map[string]any {
			return map[string]any{"erase": erase, "auth": map[string]any{"type": "m.login.password", "user": user, "password": "pw"}}
		}
		e.want("POST", v3+"/account/deactivate", aliceToken, auth("alice", "yes"), 400, "M_BAD_JSON")
		e.want("POST", v3+"/account/deactivate", aliceToken, auth("alice", true), 200, "")
		e.want("POST", v3+"/account/deactivate", bobToken, auth("bob", false), 200, "")
		res, err := e.users.QueryErasedUsers(context.Background(), &uapi.QueryErasedUsersRequest{UserIDs: []string{alice, bob}})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Erased) != 1 || res.Erased[0] != alice {
			t.Fatalf("erased %v, want only %s", res.Erased, alice)
		}
	})
}

// TestUIASessionBoundToRequest: a User-Interactive Authentication session started for one
// request cannot complete another (sytest "The operation must be consistent through an
// interactive authentication session"); the request it was started for completes with it.
func TestUIASessionBoundToRequest(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := newEnv(t, db, openCfg())
		userID, token := e.register("alice", "pw")
		for _, dev := range []string{"ONE", "TWO"} {
			e.want("POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw", "device_id": dev}, 200, "")
		}
		challenge := e.want("DELETE", v3+"/devices/ONE", token, map[string]any{}, 401, "")
		auth := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": userID}, "password": "pw", "session": challenge["session"]}
		e.want("DELETE", v3+"/devices/TWO", token, map[string]any{"auth": auth}, 403, "M_FORBIDDEN")
		e.want("GET", v3+"/devices/TWO", token, nil, 200, "")
		e.want("DELETE", v3+"/devices/ONE", token, map[string]any{"auth": auth}, 200, "")
		e.want("GET", v3+"/devices/ONE", token, nil, 404, "M_NOT_FOUND")
	})
}
