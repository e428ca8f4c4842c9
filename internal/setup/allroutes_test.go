package setup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// bodySpec is how the all-routes test builds bodies for one route that takes one.
type bodySpec struct {
	// sample is a valid body (with "{{room}}", "{{event}}", "{{user}}", "{{device}}" filled in);
	// "" when the route takes no body (the spec defines none), so it gets no body cases.
	sample string
	// freeform lists the parts of the body that are arbitrary JSON (event, account data or
	// to-device content) as paths like ".messages.{{user}}" ("." for the whole body): below
	// them a value of another type is legitimate, so it is not one of the cases.
	freeform []string
	// optional is set where an empty body is a valid request, so it is not one of the cases.
	optional bool
}

// clientBodies has an entry for every client route whose method may carry a body, keyed by
// method and path template without the /_matrix/client/{version} prefix. A route missing
// here fails TestEveryClientRoute, so a new route cannot escape it.
var clientBodies = map[string]bodySpec{
	"POST /register":                                        {sample: `{"username":"x1","password":"password-x1","auth":{"type":"m.login.dummy"},"inhibit_login":true,"device_id":"D","initial_device_display_name":"d"}`},
	"POST /login":                                           {sample: `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"{{user}}"},"password":"wrong","device_id":"D","initial_device_display_name":"d"}`},
	"POST /logout":                                          {},
	"POST /logout/all":                                      {},
	"PUT /profile/{userID}/displayname":                     {sample: `{"displayname":"x"}`},
	"PUT /profile/{userID}/avatar_url":                      {sample: `{"avatar_url":"mxc://x/y"}`},
	"POST /user/{userID}/filter":                            {sample: `{"event_fields":["type"],"event_format":"client","presence":{"limit":1},"account_data":{"types":["x"]},"room":{"timeline":{"limit":1},"rooms":["{{room}}"]}}`},
	"POST /user/{userID}/openid/request_token":              {sample: `{}`},
	"PUT /user/{userID}/account_data/{type}":                {sample: `{"a":"b","n":1}`, freeform: []string{"."}},
	"PUT /user/{userID}/rooms/{roomID}/account_data/{type}": {sample: `{"a":"b","n":1}`, freeform: []string{"."}},
	"PUT /user/{userID}/rooms/{roomID}/tags/{tag}":          {sample: `{"order":0.5}`},
	"DELETE /user/{userID}/rooms/{roomID}/tags/{tag}":       {},
	"POST /user_directory/search":                           {sample: `{"search_term":"alice","limit":5}`},
	"PUT /devices/{deviceID}":                               {sample: `{"display_name":"x"}`},
	"DELETE /devices/{deviceID}":                            {sample: `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"{{user}}"},"password":"wrong"}}`},
	"POST /delete_devices":                                  {sample: `{"devices":["{{device}}"],"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"{{user}}"},"password":"wrong"}}`},
	"POST /account/deactivate":                              {sample: `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"{{user}}"},"password":"wrong"}}`, optional: true},
	"POST /account/3pid/bind":                               {sample: `{"client_secret":"s","id_server":"127.0.0.1:1","id_access_token":"t","sid":"1"}`},
	"POST /account/3pid/unbind":                             {sample: `{"medium":"email","address":"a@example.org","id_server":"127.0.0.1:1"}`},
	"POST /account/3pid/delete":                             {sample: `{"medium":"email","address":"a@example.org"}`},
	"POST /account/password":                                {sample: `{"new_password":"x","logout_devices":false,"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"{{user}}"},"password":"wrong"}}`},
	"POST /_synapse/admin/v1/register":                      {sample: `{"nonce":"x","username":"x2","displayname":"x","password":"password-x2","admin":false,"mac":"00"}`},
	"PUT /pushrules/{path:.*}":                              {sample: `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"type","pattern":"x"}],"pattern":"x"}`},
	"DELETE /pushrules/{path:.*}":                           {},
	"POST /keys/upload":                                     {sample: `{"device_keys":{"user_id":"{{user}}","device_id":"{{device}}","algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{"ed25519:{{device}}":"x"},"signatures":{"{{user}}":{"ed25519:{{device}}":"x"}}},"one_time_keys":{"signed_curve25519:A":{"key":"x","signatures":{}}},"fallback_keys":{}}`, freeform: []string{".device_keys.keys", ".device_keys.signatures", ".one_time_keys", ".fallback_keys"}},
	"POST /keys/query":                                      {sample: `{"device_keys":{"{{user}}":[]},"timeout":10000}`},
	"POST /keys/claim":                                      {sample: `{"one_time_keys":{"{{user}}":{"{{device}}":"signed_curve25519"}},"timeout":10000}`},
	"POST /keys/device_signing/upload":                      {sample: `{"master_key":{"user_id":"{{user}}","usage":["master"],"keys":{"ed25519:x":"x"}},"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"{{user}}"},"password":"wrong"}}`, freeform: []string{".master_key.keys"}},
	"POST /keys/signatures/upload":                          {sample: `{"{{user}}":{"{{device}}":{"user_id":"{{user}}","device_id":"{{device}}","keys":{},"signatures":{}}}}`, freeform: []string{"."}},
	"POST /room_keys/version":                               {sample: `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"x","signatures":{}}}`, freeform: []string{".auth_data"}},
	"PUT /room_keys/version/{version}":                      {sample: `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"x","signatures":{}},"version":"1"}`, freeform: []string{".auth_data"}},
	"DELETE /room_keys/version/{version}":                   {},
	"PUT /room_keys/keys":                                   {sample: `{"rooms":{"{{room}}":{"sessions":{"s":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"x","ephemeral":"x","mac":"x"}}}}}}`, freeform: []string{".rooms"}},
	"PUT /room_keys/keys/{roomID}":                          {sample: `{"sessions":{"s":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"x","ephemeral":"x","mac":"x"}}}}`, freeform: []string{".sessions"}},
	"PUT /room_keys/keys/{roomID}/{sessionID}":              {sample: `{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"x","ephemeral":"x","mac":"x"}}`, freeform: []string{".session_data"}},
	"DELETE /room_keys/keys":                                {},
	"DELETE /room_keys/keys/{roomID}":                       {},
	"DELETE /room_keys/keys/{roomID}/{sessionID}":           {},
	"POST /search":                                          {sample: `{"search_categories":{"room_events":{"search_term":"x","keys":["content.body"],"order_by":"recent","filter":{"limit":1,"rooms":["{{room}}"],"not_rooms":[],"senders":["{{user}}"],"not_senders":[],"types":["m.room.message"]},"event_context":{"before_limit":1,"after_limit":1,"include_profile":true},"include_state":true,"groupings":{"group_by":[{"key":"room_id"}]}}}}`},
	"POST /pushers/set":                                     {sample: `{"pushkey":"k","kind":"http","app_id":"a","app_display_name":"A","device_display_name":"D","profile_tag":"t","lang":"en","data":{"url":"https://push.example.org/_matrix/push/v1/notify","format":"event_id_only"},"append":false}`, freeform: []string{".data"}},
	"PUT /directory/room/{roomAlias}":                       {sample: `{"room_id":"{{room}}"}`},
	"DELETE /directory/room/{roomAlias}":                    {},
	"PUT /directory/list/room/{roomID}":                     {sample: `{"visibility":"private"}`},
	"POST /publicRooms":                                     {sample: `{"limit":1,"since":"","filter":{"generic_search_term":"x"}}`},
	"PUT /rooms/{roomID}/typing/{userID}":                   {sample: `{"typing":true,"timeout":1000}`},
	"PUT /sendToDevice/{eventType}/{txnID}":                 {sample: `{"messages":{"{{user}}":{"{{device}}":{"a":"b"}}}}`, freeform: []string{".messages.{{user}}.{{device}}"}},
	"POST /rooms/{roomID}/receipt/{receiptType}/{eventID}":  {sample: `{"thread_id":"main"}`, optional: true},
	"POST /rooms/{roomID}/read_markers":                     {sample: `{"m.fully_read":"{{event}}","m.read":"{{event}}","m.read.private":"{{event}}"}`},
	"PUT /presence/{userID}/status":                         {sample: `{"presence":"online","status_msg":"x"}`},
	"POST /createRoom":                                      {sample: `{"visibility":"private","room_alias_name":"x3","name":"x","topic":"x","invite":["@bob:allroutes.test"],"invite_3pid":[],"room_version":"10","creation_content":{"m.federate":true},"initial_state":[{"type":"m.test","state_key":"","content":{"a":"b"}}],"preset":"private_chat","is_direct":false,"power_level_content_override":{}}`, freeform: []string{".initial_state[0].content"}},
	"POST /join/{roomIDOrAlias}":                            {sample: `{"reason":"x"}`, optional: true},
	"POST /knock/{roomIDOrAlias}":                           {sample: `{"reason":"x"}`, optional: true},
	"POST /peek/{roomIDOrAlias}":                            {sample: `{}`},
	"POST /rooms/{roomId}/unpeek":                           {sample: `{}`},
	"POST /rooms/{roomID}/upgrade":                          {sample: `{"new_version":"99"}`},
	"POST /rooms/{roomID}/join":                             {sample: `{"reason":"x"}`, optional: true},
	"POST /rooms/{roomID}/invite":                           {sample: `{"user_id":"@bob:allroutes.test","reason":"x"}`},
	"POST /rooms/{roomID}/leave":                            {sample: `{"reason":"x"}`, optional: true},
	"POST /rooms/{roomID}/forget":                           {},
	"POST /rooms/{roomID}/kick":                             {sample: `{"user_id":"@bob:allroutes.test","reason":"x"}`},
	"POST /rooms/{roomID}/ban":                              {sample: `{"user_id":"@bob:allroutes.test","reason":"x"}`},
	"POST /rooms/{roomID}/unban":                            {sample: `{"user_id":"@bob:allroutes.test","reason":"x"}`},
	"POST /rooms/{roomID}/send/{eventType}":                 {sample: `{"msgtype":"m.text","body":"x"}`, freeform: []string{"."}},
	"PUT /rooms/{roomID}/send/{eventType}/{txnID}":          {sample: `{"msgtype":"m.text","body":"x"}`, freeform: []string{"."}},
	"PUT /rooms/{roomID}/redact/{eventID}/{txnID}":          {sample: `{"reason":"x"}`},
	"POST /rooms/{roomID}/redact/{eventID}":                 {sample: `{"reason":"x"}`},
	"PUT /rooms/{roomID}/state/{eventType}":                 {sample: `{"a":"b"}`, freeform: []string{"."}},
	"PUT /rooms/{roomID}/state/{eventType}/{stateKey:.*}":   {sample: `{"a":"b"}`, freeform: []string{"."}},
	"POST /org.matrix.simplified_msc3575/sync": {sample: `{"conn_id":"main","set_presence":"offline","lists":{"all":{"range":[0,19],"timeline_limit":1,` +
		`"required_state":[["m.room.create",""],["m.room.member","$LAZY"]],"filters":{"is_dm":false,"is_invite":false,"not_room_types":["m.space"]}}},` +
		`"room_subscriptions":{"{{room}}":{"timeline_limit":5,"required_state":{"include":[{"type":"m.room.name","state_key":""}],"lazy_members":true}}},` +
		`"extensions":{"to_device":{"enabled":true,"limit":10},"e2ee":{"enabled":true},"account_data":{"enabled":true,"lists":["all"],"rooms":["{{room}}"]},` +
		`"receipts":{"enabled":true},"typing":{"enabled":true}}}`},
	"POST /_matrix/client/v1/appservice/{appserviceID}/ping": {sample: `{"transaction_id":"x"}`, optional: true},
	"PUT /directory/list/appservice/{networkID}/{roomID}":    {sample: `{"visibility":"public"}`},
	"DELETE /directory/list/appservice/{networkID}/{roomID}": {},
}

// fixture is a user with a room, an event, an alias, a filter and account data: the values
// the test fills path variables and bodies with, so that requests reach the handlers' logic.
type fixture struct {
	url    string
	alice  *mautrix.Client
	room   id.RoomID
	event  id.EventID
	alias  string
	filter string
	media  string
	txn    int
}

func newFixture(t *testing.T, url string) *fixture {
	t.Helper()
	ctx := context.Background()
	alice := e2e.Register(t, url, "allroutes")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomAliasName: "allroutes", Topic: "before"})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, created.RoomID, "before")
	if err != nil {
		t.Fatal(err)
	}
	f, err := alice.CreateFilter(ctx, &mautrix.Filter{EventFields: []string{"type"}})
	if err != nil {
		t.Fatal(err)
	}
	if err = alice.SetAccountData(ctx, "m.test.allroutes", map[string]string{"a": "before"}); err != nil {
		t.Fatal(err)
	}
	if err = alice.SetRoomAccountData(ctx, created.RoomID, "m.test.allroutes", map[string]string{"a": "before"}); err != nil {
		t.Fatal(err)
	}
	up, err := alice.UploadBytes(ctx, []byte("allroutes"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{url: url, alice: alice, room: created.RoomID, event: sent.EventID,
		alias: "#allroutes:" + alice.UserID.Homeserver(), filter: f.FilterID, media: up.ContentURI.FileID}
	// The snapshot reads the room through the sync API, whose read-your-writes wait is
	// bounded (5 s): on a machine busy with other tests it may not have applied the room
	// yet. Wait until it has, so that the snapshot is the fixture's.
	path := "/_matrix/client/v3/rooms/" + escapePathValue(string(created.RoomID)) + "/messages?dir=b&limit=100"
	deadline := time.Now().Add(time.Minute)
	for a := fx.do(t, http.MethodGet, path, nil); a.status != http.StatusOK || !strings.Contains(a.raw, string(sent.EventID)); a = fx.do(t, http.MethodGet, path, nil) {
		if time.Now().After(deadline) {
			t.Fatalf("the sync API never showed the fixture's room: %d %s", a.status, a.raw)
		}
	}
	return fx
}

// value is a valid value for a path variable; the test fails for a variable it does not know.
func (f *fixture) value(t *testing.T, name string) string {
	t.Helper()
	f.txn++
	switch name {
	case "roomID", "roomId", "roomIDOrAlias":
		return string(f.room)
	case "userID":
		return f.alice.UserID.String()
	case "eventID", "eventId":
		return string(f.event)
	case "eventType", "type":
		return "m.test.allroutes"
	case "stateKey":
		return "k"
	case "txnID":
		return fmt.Sprintf("allroutes%d", f.txn)
	case "filterID":
		return f.filter
	case "deviceID":
		return string(f.alice.DeviceID)
	case "roomAlias":
		return f.alias
	case "receiptType":
		return "m.read"
	case "serverName":
		return f.alice.UserID.Homeserver()
	case "keyID":
		return "ed25519:auto"
	case "tag":
		return "u.allroutes"
	case "relType":
		return "m.thread"
	case "mediaId":
		return f.media
	case "sessionID":
		return "allroutes-session"
	case "version":
		return "1"
	case "fileName":
		return "allroutes.txt"
	case "networkID":
		return "allroutes-network"
	case "protocol":
		return "allroutes"
	case "appserviceID":
		return "allroutes-service"
	case "path":
		return ""
	}
	t.Fatalf("no value for the path variable %s: add one to fixture.value", name)
	return ""
}

func (f *fixture) fill(s string) string {
	return strings.NewReplacer("{{room}}", string(f.room), "{{event}}", string(f.event), "{{user}}", f.alice.UserID.String(),
		"{{device}}", string(f.alice.DeviceID)).Replace(s)
}

type answer struct {
	status int
	body   map[string]any
	raw    string
}

func (f *fixture) do(t *testing.T, method, path string, body []byte) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodOptions {
		req.Header.Set("Authorization", "Bearer "+f.alice.AccessToken)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("%s %s: %d without the CORS headers", method, path, res.StatusCode)
	}
	a := answer{status: res.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body) // a body that is not JSON is reported by the checks
	return a
}

// isMatrixError: a Matrix error body, or the 401 of user-interactive auth (its flows).
func (a answer) isMatrixError() bool {
	if a.status < 400 || a.status >= 500 {
		return false
	}
	if code, ok := a.body["errcode"].(string); ok && strings.HasPrefix(code, "M_") {
		return true
	}
	_, flows := a.body["flows"]
	return a.status == http.StatusUnauthorized && flows
}

// route is one routed method and path template.
type route struct{ method, template string }

// routesOf walks the router: every route it serves with a method other than OPTIONS.
func routesOf(t *testing.T, router *mux.Router) []route {
	t.Helper()
	var out []route
	err := router.Walk(func(r *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := r.GetPathTemplate()
		if err != nil {
			return nil // not a path route
		}
		methods, err := r.GetMethods()
		if err != nil {
			return nil // /health, /ready, /metrics: any method
		}
		for _, m := range methods {
			if m != http.MethodOptions {
				out = append(out, route{m, tpl})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].template+out[i].method < out[j].template+out[j].method })
	return out
}

var clientPrefix = regexp.MustCompile(`^/_matrix/client/(v3|r0|unstable)`)

var pathVar = regexp.MustCompile(`\{([A-Za-z]+)(:[^}]*)?\}`)

// path fills the template's variables with valid values, except the one named bad, which
// gets badValue (already percent-encoded).
func (f *fixture) path(t *testing.T, template, bad, badValue string) string {
	t.Helper()
	return pathVar.ReplaceAllStringFunc(template, func(m string) string {
		name := pathVar.FindStringSubmatch(m)[1]
		if name == bad {
			return badValue
		}
		return escapePathValue(f.value(t, name))
	})
}

func escapePathValue(v string) string {
	var b strings.Builder
	for _, c := range []byte(v) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// bodyCase is one malformed body.
type bodyCase struct {
	name string
	body []byte
}

// bodyCases are the bodies sent to a route described by spec: the empty body, bodies that
// are not UTF-8 JSON or not an object, and for each value of the sample, at any depth, a
// value of another type, a huge integer, a string that is not UTF-8, a lone surrogate and a
// NUL.
func bodyCases(t *testing.T, spec bodySpec, sample string, fill func(string) string) []bodyCase {
	t.Helper()
	cases := []bodyCase{
		{"truncated", []byte(`{"a":`)}, {"not UTF-8", []byte("\xff\xfe")}, {"array", []byte(`[]`)},
		{"huge integer", []byte(`18446744073709551616`)},
	}
	if !spec.optional {
		cases = append(cases, bodyCase{"empty", []byte{}})
	}
	dec := json.NewDecoder(strings.NewReader(sample))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("sample %s: %v", sample, err)
	}
	eachValue(root, root, "", func(path string, orig any, body []byte) {
		bad := map[string]string{
			"huge integer": `18446744073709551616`, "not UTF-8": "\"\xff\xfe\"", "lone surrogate": `"\ud800"`, "NUL": `"a\u0000b"`,
		}
		free := false
		for _, prefix := range spec.freeform {
			under := strings.TrimPrefix(path, fill(prefix))
			free = free || prefix == "." || (under != path && (strings.HasPrefix(under, ".") || strings.HasPrefix(under, "[")))
		}
		if !free {
			bad["wrong type"] = `"x"`
			if _, ok := orig.(string); ok {
				bad["wrong type"] = `12345`
			}
		}
		for what, v := range bad {
			cases = append(cases, bodyCase{path + ": " + what, bytes.Replace(body, []byte(`"`+mutation+`"`), []byte(v), 1)})
		}
	})
	return cases
}

// mutation marks, in a marshalled body, the value a case replaces.
const mutation = "@@mutation@@"

// eachValue calls emit for every object member and array element under v (a part of root),
// with its path, its value and root marshalled with that value replaced by mutation.
func eachValue(root, v any, path string, emit func(path string, orig any, body []byte)) {
	visit := func(p string, orig any, set func(any)) {
		set(mutation)
		body, _ := json.Marshal(root) // decoded JSON always encodes
		set(orig)
		emit(p, orig, body)
		eachValue(root, orig, p, emit)
	}
	switch c := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(c))
		for k := range c {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			visit(path+"."+k, c[k], func(x any) { c[k] = x })
		}
	case []any:
		for i := range c {
			visit(fmt.Sprintf("%s[%d]", path, i), c[i], func(x any) { c[i] = x })
		}
	}
}

// junkQuery is a query string of out-of-range and malformed values for the parameters GET
// routes read.
const junkQuery = "?limit=99999999999999999999&from=zz&to=zz&dir=x&filter=%7B&since=zz&timeout=-1&full_state=x" +
	"&set_presence=x&membership=x&not_membership=x&at=zz&server=%40&minimum_valid_until_ts=x"

// TestEveryClientRoute walks the monolith's router and sends every client route, for a real
// user and room, a method it does not serve and a preflight (every answer carries the CORS
// headers; unknown paths are 404 M_UNRECOGNIZED), malformed bodies (bodyCases), path variables and query parameters that are
// not UTF-8 or hold NUL, and GET routes valid and junk queries. Every answer must be a 4xx
// Matrix error (GETs: anything but a 5xx); afterwards the server still answers /health and
// /sync, and nothing the fixture stored changed. Both engines: PostgreSQL refuses NUL in text
// where SQLite stores it.
func TestEveryClientRoute(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			cfg := config.Defaults()
			cfg.Global.ServerName = "allroutes.test"
			cfg.Global.DataDir = t.TempDir()
			if engine == "postgres" {
				cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
			}
			cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
			m, url := startMonolith(t, cfg)
			f := newFixture(t, url)
			before := f.snapshot(t)
			seen := map[string]bool{}
			f.unknownPaths(t)
			for _, rt := range routesOf(t, m.router) {
				f.unmatched(t, rt)
				f.badParams(t, rt)
				client := strings.HasPrefix(rt.template, "/_matrix/client/") || strings.HasPrefix(rt.template, "/_synapse/")
				switch {
				case !client:
				case rt.method == http.MethodGet:
					f.gets(t, rt)
				default:
					key := rt.method + " " + clientPrefix.ReplaceAllString(rt.template, "")
					seen[key] = true
					spec, ok := clientBodies[key]
					if !ok {
						t.Errorf("%s: no entry in clientBodies; add one", key)
						continue
					}
					f.badBodies(t, rt, spec)
				}
			}
			for key := range clientBodies {
				if !seen[key] {
					t.Errorf("clientBodies has %s, which the router does not serve", key)
				}
			}
			f.healthy(t, before)
		})
	}
}

// unknownPaths: a path no route serves is 404 M_UNRECOGNIZED, and a preflight to it succeeds.
func (f *fixture) unknownPaths(t *testing.T) {
	t.Helper()
	for _, path := range []string{"/_matrix/client/v3/allroutes", "/_matrix/client/unstable/allroutes", "/_matrix/federation/v1/allroutes",
		"/_matrix/key/v2/allroutes", "/_matrix/media/v3/allroutes", "/_synapse/allroutes", "/_matrix"} {
		if a := f.do(t, http.MethodGet, path, nil); a.status != http.StatusNotFound || a.body["errcode"] != "M_UNRECOGNIZED" {
			t.Errorf("GET %s: %d %s, want 404 M_UNRECOGNIZED", path, a.status, a.raw)
		}
		if a := f.do(t, http.MethodOptions, path, nil); a.status != http.StatusOK {
			t.Errorf("OPTIONS %s: %d %s", path, a.status, a.raw)
		}
	}
}

// unmatched: a method the route's path does not serve is 405 M_UNRECOGNIZED; a preflight
// without a token succeeds.
func (f *fixture) unmatched(t *testing.T, rt route) {
	t.Helper()
	path := f.path(t, rt.template, "", "")
	if a := f.do(t, http.MethodPatch, path, []byte(`{}`)); a.status != http.StatusMethodNotAllowed || a.body["errcode"] != "M_UNRECOGNIZED" {
		t.Errorf("PATCH %s: %d %s, want 405 M_UNRECOGNIZED", path, a.status, a.raw)
	}
	if a := f.do(t, http.MethodOptions, path, nil); a.status != http.StatusOK {
		t.Errorf("OPTIONS %s: %d %s", path, a.status, a.raw)
	}
}

// badParams: each path variable, and a query parameter, that is not UTF-8 or holds NUL is
// refused with 400 M_INVALID_PARAM before the handler runs (client and federation routes).
func (f *fixture) badParams(t *testing.T, rt route) {
	t.Helper()
	for _, m := range pathVar.FindAllStringSubmatch(rt.template, -1) {
		for _, bad := range []string{"%FF", "a%00b", "%ED%A0%80"} {
			f.wantCode(t, rt.method, f.path(t, rt.template, m[1], bad), nil, "M_INVALID_PARAM", m[1]+"="+bad)
		}
	}
	for _, q := range []string{"?x=%FF", "?x=a%00b", "?x=%zz", "?%C3%28=1"} {
		f.wantCode(t, rt.method, f.path(t, rt.template, "", "")+q, nil, "M_INVALID_PARAM", q)
	}
}

func (f *fixture) wantCode(t *testing.T, method, path string, body []byte, code, what string) {
	t.Helper()
	if a := f.do(t, method, path, body); a.status != http.StatusBadRequest || a.body["errcode"] != code {
		t.Errorf("%s %s (%s): %d %s, want 400 %s", method, path, what, a.status, a.raw, code)
	}
}

// gets: a GET route with valid values, and with junk query parameters, never answers 5xx.
func (f *fixture) gets(t *testing.T, rt route) {
	t.Helper()
	for _, q := range []string{"", junkQuery} {
		path := f.path(t, rt.template, "", "") + q
		if a := f.do(t, rt.method, path, nil); a.status >= 500 || (a.status >= 400 && !a.isMatrixError()) {
			t.Errorf("GET %s: %d %s", path, a.status, a.raw)
		}
	}
}

// badBodies: every case of bodyCases is a 4xx Matrix error.
func (f *fixture) badBodies(t *testing.T, rt route, spec bodySpec) {
	t.Helper()
	if spec.sample == "" {
		return
	}
	for _, c := range bodyCases(t, spec, f.fill(spec.sample), f.fill) {
		path := f.path(t, rt.template, "", "")
		if a := f.do(t, rt.method, path, c.body); !a.isMatrixError() {
			t.Errorf("%s %s with %s %q: %d %s", rt.method, rt.template, c.name, c.body, a.status, a.raw)
		}
	}
}

// snapshot is what the fixture stored, as the client API shows it, keyed by what it is.
func (f *fixture) snapshot(t *testing.T) map[string]string {
	t.Helper()
	user, room := escapePathValue(f.alice.UserID.String()), escapePathValue(string(f.room))
	v3 := "/_matrix/client/v3"
	out := map[string]string{}
	for what, path := range map[string]string{
		"state": v3 + "/rooms/" + room + "/state", "joined rooms": v3 + "/joined_rooms", "devices": v3 + "/devices",
		"profile": v3 + "/profile/" + user, "account data": v3 + "/user/" + user + "/account_data/m.test.allroutes",
		"room account data": v3 + "/user/" + user + "/rooms/" + room + "/account_data/m.test.allroutes",
		"messages":          v3 + "/rooms/" + room + "/messages?dir=b&limit=100", "alias": v3 + "/directory/room/" + escapePathValue(f.alias),
		"visibility": v3 + "/directory/list/room/" + room, "filter": v3 + "/user/" + user + "/filter/" + f.filter,
		"push rules": v3 + "/pushrules/", "members": v3 + "/rooms/" + room + "/members",
	} {
		a := f.do(t, http.MethodGet, path, nil)
		if a.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, a.status, a.raw)
		}
		out[what] = normalize(t, what, []byte(a.raw))
	}
	return out
}

// normalize drops what changes without anything being stored (device last-seen times,
// pagination tokens, events' ages) and orders lists the server may return in any order.
func normalize(t *testing.T, what string, raw []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	switch what {
	case "devices":
		for _, d := range v.(map[string]any)["devices"].([]any) {
			delete(d.(map[string]any), "last_seen_ts")
			delete(d.(map[string]any), "last_seen_ip")
		}
	case "messages", "members":
		v = v.(map[string]any)["chunk"]
	}
	if list, ok := v.([]any); ok {
		for _, ev := range list {
			if u, ok := ev.(map[string]any)["unsigned"].(map[string]any); ok {
				delete(u, "age")
			}
		}
	}
	if list, ok := v.([]any); ok {
		items := make([]string, len(list))
		for i, item := range list {
			b, _ := json.Marshal(item) // decoded JSON always encodes
			items[i] = string(b)
		}
		sort.Strings(items)
		return strings.Join(items, "\n")
	}
	b, _ := json.Marshal(v) // decoded JSON always encodes
	return string(b)
}

// healthy: the server answers /health and /sync, and the fixture's data is as before.
func (f *fixture) healthy(t *testing.T, before map[string]string) {
	t.Helper()
	if a := f.do(t, http.MethodGet, "/health", nil); a.status != http.StatusOK {
		t.Fatalf("/health: %d %s", a.status, a.raw)
	}
	res, err := f.alice.SyncRequest(context.Background(), 0, "", "", false, "")
	if err != nil {
		t.Fatalf("/sync: %v", err)
	}
	if _, ok := res.Rooms.Join[f.room]; !ok {
		t.Fatalf("/sync no longer shows the room")
	}
	after := f.snapshot(t)
	for what, b := range before {
		if after[what] != b {
			t.Errorf("%s changed:\nbefore %s\nafter  %s", what, b, after[what])
		}
	}
}
