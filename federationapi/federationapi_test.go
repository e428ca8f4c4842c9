package federationapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/federationapi"
	"github.com/matrix-org/dendrite/federationapi/api"
	finthttp "github.com/matrix-org/dendrite/federationapi/inthttp"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/fedclient"
	"github.com/matrix-org/dendrite/internal/httputil"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	"github.com/matrix-org/dendrite/roomserver"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/userapi"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// clock is a movable clock shared by the nodes of a test.
type clock struct {
	offset atomic.Int64
}

func (c *clock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// node is one homeserver's federationapi (and userapi, for profiles) on its own database,
// behind its own TLS listener on 127.0.0.1 with a self-signed certificate; its server name
// is "127.0.0.1:<port>". Its outbound client skips certificate checks.
type node struct {
	t      testing.TB
	name   spec.ServerName
	keyID  gomatrixserverlib.KeyID
	key    ed25519.PrivateKey
	dsn    string
	cfg    config.FederationAPI
	clk    *clock
	srv    *httptest.Server
	client *fedclient.Client

	handler atomic.Pointer[http.Handler]
	fed     *federationapi.FederationAPI
	// rs is the node's roomserver (on its database, with an embedded log), which /send
	// writes to; stopRS ends it.
	rs    *roomserver.RoomServer
	input *rsapi.Input
	// log is the node's embedded log; received EDUs go to its "edu-*" topics.
	log    eventlog.Log
	stopRS func()
	users  uapi.ClientUserAPI
	db     *sqlutil.DB

	mu   sync.Mutex
	hits map[string]int // requests served, by path
}

type nodeOpts struct {
	validity time.Duration
	notaries []*node
	// limit replaces the default rate limits of origin servers.
	limit *config.ServerRateLimiting
}

func newNode(t testing.TB, dsn string, clk *clock, o nodeOpts) *node {
	t.Helper()
	n := &node{t: t, dsn: dsn, clk: clk, hits: map[string]int{}, keyID: "ed25519:" + gomatrixserverlib.KeyID(fmt.Sprint(time.Now().UnixNano()%100000))}
	_, n.key, _ = ed25519.GenerateKey(nil)
	n.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.hits[r.URL.Path]++
		n.mu.Unlock()
		(*n.handler.Load()).ServeHTTP(w, r)
	}))
	n.name = spec.ServerName(n.srv.Listener.Addr().String())
	n.cfg = config.Defaults().FederationAPI
	if o.validity != 0 {
		n.cfg.KeyValidityPeriod = config.Duration(o.validity)
	}
	if o.limit != nil {
		n.cfg.RateLimiting = *o.limit
	}
	for _, notary := range o.notaries {
		n.cfg.KeyPerspectives = append(n.cfg.KeyPerspectives, config.KeyPerspective{ServerName: string(notary.name), Keys: []config.PerspectiveKey{
			{KeyID: string(notary.keyID), PublicKey: spec.Base64Bytes(notary.key.Public().(ed25519.PublicKey)).Encode()},
		}})
	}
	n.client = fedclient.New(fedclient.Options{ServerName: n.name, KeyID: n.keyID, PrivateKey: n.key, SkipVerify: true, Timeout: 5 * time.Second})
	n.start()
	n.srv.StartTLS()
	t.Cleanup(func() {
		n.srv.Close()
		n.client.CloseIdleConnections()
		n.stopRS()
		_ = n.db.Close() // nothing to do about a failed close in cleanup
	})
	return n
}

// start (re)builds the components on the node's database and serves them.
func (n *node) start() {
	t := n.t
	t.Helper()
	db, err := sqlutil.Open(n.dsn)
	if err != nil {
		t.Fatal(err)
	}
	n.db = db
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	ctx := context.Background()
	ua, err := userapi.New(ctx, userapi.Deps{Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: string(n.name), DB: db, Logger: logrus.NewEntry(logger)})
	if err != nil {
		t.Fatal(err)
	}
	n.users = ua.API()
	n.startRoomserver(db, logger)
	n.fed, err = federationapi.New(ctx, federationapi.Deps{
		Cfg: &n.cfg, ServerName: n.name, KeyID: n.keyID, PrivateKey: n.key, DB: db, Client: n.client, Users: n.users,
		Federation: n.client, Roomserver: nodeRoomserver{QueryAPI: n.rs.API(), InputAPI: n.input, DirectoryAPI: n.rs.API()},
		EDU:      &eduapi.Producer{Log: n.log, TypingTopic: "edu-typing", ToDeviceTopic: "edu-todevice"},
		Receipts: &receiptapi.Producer{Log: n.log, Topic: "edu-receipt"}, Presence: &presenceapi.Producer{Log: n.log, Topic: "edu-presence"},
		Logger: logrus.NewEntry(logger), Now: n.clk.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	router := mux.NewRouter().UseEncodedPath()
	(&httputil.Server{Component: "federationapi", Logger: logrus.NewEntry(logger), MaxBodyBytes: n.cfg.MaxBodyBytes}).Register(router, n.fed.Routes())
	var h http.Handler = router
	n.handler.Store(&h)
}

type nodeRoomserver struct {
	rsapi.QueryAPI
	rsapi.InputAPI
	rsapi.DirectoryAPI
}

// startRoomserver runs a roomserver on the node's database with an embedded log.
func (n *node) startRoomserver(db *sqlutil.DB, logger *logrus.Logger) {
	t := n.t
	ctx, cancel := context.WithCancel(context.Background())
	log, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	n.rs, err = roomserver.New(ctx, roomserver.Deps{
		Cfg: &config.RoomServer{Shards: 1}, ServerName: n.name, KeyID: n.keyID, PrivateKey: n.key,
		DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logger),
	})
	if err != nil {
		t.Fatal(err)
	}
	n.input = &rsapi.Input{Log: log, Topic: "in", Wait: n.rs.API()}
	n.log = log
	done := make(chan error, 1)
	go func() { done <- n.rs.Run(ctx) }()
	n.stopRS = func() {
		cancel()
		<-done          // an error now is the cancellation's
		_ = log.Close() // nothing to do about a failed close at the end
	}
}

// restart closes the node's database and builds everything again on it.
func (n *node) restart() {
	n.stopRS()
	if err := n.db.Close(); err != nil {
		n.t.Fatal(err)
	}
	n.start()
}

func (n *node) served(path string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hits[path]
}

func (n *node) publicKey() spec.Base64Bytes {
	return spec.Base64Bytes(n.key.Public().(ed25519.PublicKey))
}

// lookup asks the node's key API for server's key keyID.
func (n *node) lookup(server *node) (gomatrixserverlib.PublicKeyLookupResult, bool) {
	n.t.Helper()
	req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: server.name, KeyID: server.keyID}
	res, err := n.fed.API().QueryPublicKeys(context.Background(), &api.QueryPublicKeysRequest{
		Requests: map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{req: spec.AsTimestamp(n.clk.now())},
	})
	if err != nil {
		n.t.Fatal(err)
	}
	r, ok := res.Results[req]
	return r, ok
}

// forEngine runs fn on SQLite and PostgreSQL; newDSN makes a new empty database each call.
func forEngine(t *testing.T, fn func(t *testing.T, newDSN func() string)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		i := 0
		fn(t, func() string {
			i++
			return "file:" + filepath.Join(t.TempDir(), fmt.Sprintf("fed%d.db", i))
		})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, func() string { return test.PostgresDSN(t) })
	})
}

// TestKeysDirectAndThroughNotary: A fetches B's keys from B; C, which trusts A as a notary,
// gets B's keys through A while B is down (A serves its cached copy, signed by B and A).
func TestKeysDirectAndThroughNotary(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		c := newNode(t, newDSN(), clk, nodeOpts{notaries: []*node{a}})

		res, ok := a.lookup(b)
		if !ok || string(res.Key) != string(b.publicKey()) || res.ValidUntilTS <= spec.AsTimestamp(time.Now()) {
			t.Fatalf("A's lookup of B's key: %+v %v", res, ok)
		}
		// The notary endpoint, by GET and POST, answers B's response with both signatures.
		for _, keys := range notaryQuery(t, c, a, b) {
			for _, signer := range []*node{a, b} {
				if err := gomatrixserverlib.VerifyJSON(string(signer.name), signer.keyID, signer.key.Public().(ed25519.PublicKey), keys.Raw); err != nil {
					t.Fatalf("notary answer not signed by %s: %v", signer.name, err)
				}
			}
		}
		b.srv.Close()
		res, ok = c.lookup(b)
		if !ok || string(res.Key) != string(b.publicKey()) {
			t.Fatalf("C's lookup of B's key through notary A: %+v %v", res, ok)
		}
		if b.served("/_matrix/key/v2/server") != 1 {
			t.Fatalf("B served its keys %d times, want once (A cached them)", b.served("/_matrix/key/v2/server"))
		}
		// Another component verifies B's signature through A's internal API over HTTP.
		router := mux.NewRouter()
		srv := finthttp.Register(router, a.fed.API(), ihttp.ServerOptions{Logger: logrus.NewEntry(logrus.New())})
		if want, _ := ihttp.Methods(reflect.TypeFor[api.ServerAPI]()); !slices.Equal(srv.Methods(), want) {
			t.Fatalf("inthttp serves %v, api.ServerAPI has %v", srv.Methods(), want)
		}
		hs := httptest.NewServer(router)
		defer hs.Close()
		signed, err := gomatrixserverlib.SignJSON(string(b.name), b.keyID, b.key, []byte(`{"hello":"world"}`))
		if err != nil {
			t.Fatal(err)
		}
		ring := api.KeyRing(finthttp.NewClient(hs.URL, ihttp.ClientOptions{}))
		for _, msg := range [][]byte{signed, []byte(strings.Replace(string(signed), "world", "there", 1))} {
			results, err := ring.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{
				ServerName: b.name, AtTS: spec.AsTimestamp(time.Now()), Message: msg, ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
			}})
			if err != nil || (results[0].Error == nil) != (string(msg) == string(signed)) {
				t.Fatalf("verify over inthttp: %v %v", results, err)
			}
		}
		// Our own keys need no request.
		if res, ok := a.lookup(a); !ok || string(res.Key) != string(a.publicKey()) {
			t.Fatalf("own key: %+v %v", res, ok)
		}
	})
}

// notaryQuery asks notary about target's keys with GET and POST, from the client of from.
func notaryQuery(t *testing.T, from, notary, target *node) []gomatrixserverlib.ServerKeys {
	t.Helper()
	ctx := context.Background()
	post, err := from.client.LookupServerKeys(ctx, notary.name, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{
		{ServerName: target.name, KeyID: target.keyID}: spec.AsTimestamp(time.Now()),
	})
	if err != nil || len(post) != 1 || post[0].ServerName != target.name {
		t.Fatalf("POST /key/v2/query: %+v %v", post, err)
	}
	req, _ := http.NewRequest(http.MethodGet, "matrix://"+string(notary.name)+"/_matrix/key/v2/query/"+string(target.name), nil)
	var get struct {
		ServerKeys []gomatrixserverlib.ServerKeys `json:"server_keys"`
	}
	if err = from.client.DoRequestAndParseResponse(ctx, req, &get); err != nil || len(get.ServerKeys) != 1 {
		t.Fatalf("GET /key/v2/query/{server}: %+v %v", get, err)
	}
	return append(post, get.ServerKeys...)
}

// TestKeyServer checks our published keys: signed, valid for the configured period, with
// the configured old keys.
func TestKeyServer(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	dsn := "file:" + filepath.Join(t.TempDir(), "fed.db")
	a := newNode(t, dsn, clk, nodeOpts{})
	_, old, _ := ed25519.GenerateKey(nil)
	a.cfg.OldVerifyKeys = []config.OldVerifyKey{{KeyID: "ed25519:old", PublicKey: spec.Base64Bytes(old.Public().(ed25519.PublicKey)).Encode(), ExpiredTS: 1234}}
	a.restart()
	b := newNode(t, "file:"+filepath.Join(t.TempDir(), "fedb.db"), clk, nodeOpts{})
	keys, err := b.client.GetServerKeys(context.Background(), a.name)
	if err != nil {
		t.Fatal(err)
	}
	if checks, _ := gomatrixserverlib.CheckKeys(a.name, time.Now(), keys); !checks.AllChecksOK {
		t.Fatalf("checks: %+v", checks)
	}
	validFor := time.Until(keys.ValidUntilTS.Time())
	if validFor < 7*24*time.Hour-time.Minute || validFor > 7*24*time.Hour {
		t.Fatalf("valid for %v, want the default 7 days", validFor)
	}
	if o := keys.OldVerifyKeys["ed25519:old"]; o.ExpiredTS != 1234 || len(o.Key) != 32 {
		t.Fatalf("old_verify_keys: %+v", keys.OldVerifyKeys)
	}
	// B's key ring knows A's old key as expired: valid only for what it signed before.
	res, ok := b.lookup(&node{name: a.name, keyID: "ed25519:old"})
	if !ok || res.ExpiredTS != 1234 || !res.WasValidAt(1000, gomatrixserverlib.StrictValiditySignatureCheck) || res.WasValidAt(2000, gomatrixserverlib.StrictValiditySignatureCheck) {
		t.Fatalf("old key lookup: %+v %v", res, ok)
	}
}

// TestRequestAuthentication: a request B signs reaches A's profile endpoint; unsigned,
// wrongly signed, wrongly addressed and unverifiable requests get 401 M_UNAUTHORIZED.
func TestRequestAuthentication(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		alice := fmt.Sprintf("@alice:%s", a.name)
		if _, err := a.users.PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: "alice", Password: "pw-alice-123", AccountType: uapi.AccountTypeUser}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.users.PerformSetDisplayName(ctx, &uapi.PerformSetDisplayNameRequest{Localpart: "alice", DisplayName: "Alice"}); err != nil {
			t.Fatal(err)
		}
		p, err := b.client.LookupProfile(ctx, b.name, a.name, alice, "")
		if err != nil || p.DisplayName != "Alice" {
			t.Fatalf("signed profile query: %+v %v", p, err)
		}
		if p, err = b.client.LookupProfile(ctx, b.name, a.name, alice, "avatar_url"); err != nil || p.DisplayName != "" {
			t.Fatalf("field query: %+v %v", p, err)
		}
		_, err = b.client.LookupProfile(ctx, b.name, a.name, fmt.Sprintf("@nobody:%s", a.name), "")
		wantHTTP(t, err, http.StatusNotFound, "M_NOT_FOUND")
		_, err = b.client.LookupProfile(ctx, b.name, a.name, "@alice:elsewhere.test", "")
		wantHTTP(t, err, http.StatusBadRequest, "M_INVALID_PARAM")

		path := "/_matrix/federation/v1/query/profile?user_id=" + alice
		_, imposter, _ := ed25519.GenerateKey(nil)
		for name, sign := range map[string]func(fr *fclient.FederationRequest) error{
			"unsigned":    nil,
			"wrong key":   func(fr *fclient.FederationRequest) error { return fr.Sign(b.name, b.keyID, imposter) },
			"unknown key": func(fr *fclient.FederationRequest) error { return fr.Sign(b.name, "ed25519:nope", b.key) },
			"unreachable": func(fr *fclient.FederationRequest) error { return fr.Sign("127.0.0.1:1", b.keyID, b.key) },
		} {
			origin := b.name
			if name == "unreachable" {
				origin = "127.0.0.1:1" // nothing listens: its keys cannot be fetched
			}
			fr := fclient.NewFederationRequest(http.MethodGet, origin, a.name, path)
			if sign != nil {
				if err := sign(&fr); err != nil {
					t.Fatal(err)
				}
			}
			t.Log(name)
			wantHTTP(t, send(t, b, &fr, nil), http.StatusUnauthorized, "M_UNAUTHORIZED")
		}
		// An origin that is no server name (a non-numeric port) is a malformed request: 400,
		// as sytest's "Non-numeric ports in server names are rejected" expects.
		fr := fclient.NewFederationRequest(http.MethodGet, "localhost:http", a.name, path)
		if err := fr.Sign("localhost:http", b.keyID, b.key); err != nil {
			t.Fatal(err)
		}
		wantHTTP(t, send(t, b, &fr, nil), http.StatusBadRequest, "M_UNAUTHORIZED")
		// Correctly signed, but for another destination.
		fr = fclient.NewFederationRequest(http.MethodGet, b.name, "other.test", path)
		if err := fr.Sign(b.name, b.keyID, b.key); err != nil {
			t.Fatal(err)
		}
		wantHTTP(t, send(t, b, &fr, func(r *http.Request) { r.URL.Host = string(a.name) }), http.StatusUnauthorized, "M_UNAUTHORIZED")
		// Correctly signed for another path: the signature covers the URI.
		fr = fclient.NewFederationRequest(http.MethodGet, b.name, a.name, path+"x")
		if err := fr.Sign(b.name, b.keyID, b.key); err != nil {
			t.Fatal(err)
		}
		wantHTTP(t, send(t, b, &fr, func(r *http.Request) { r.URL.RawQuery = strings.TrimSuffix(r.URL.RawQuery, "x") }), http.StatusUnauthorized, "M_UNAUTHORIZED")
		// A correctly signed request sent by hand passes.
		fr = fclient.NewFederationRequest(http.MethodGet, b.name, a.name, path)
		if err := fr.Sign(b.name, b.keyID, b.key); err != nil {
			t.Fatal(err)
		}
		if err := send(t, b, &fr, nil); err != nil {
			t.Fatalf("signed request: %v", err)
		}
		// /version needs no signature.
		if v, err := b.client.GetVersion(ctx, a.name); err != nil || v.Server.Name != "Dendrite" {
			t.Fatalf("version: %+v %v", v, err)
		}
	})
}

// TestOriginRateLimit: each origin server has its own bucket. B's fourth request in a
// burst of three gets 429 M_LIMIT_EXCEEDED while C, exempt, is never limited; B is served
// again once its bucket refills.
func TestOriginRateLimit(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		b, c := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		a := newNode(t, newDSN(), clk, nodeOpts{limit: &config.ServerRateLimiting{Enabled: true, PerSecond: 0.5, Burst: 3, ExemptServers: []string{string(c.name)}}})
		ctx := context.Background()
		if _, err := a.users.PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: "alice", Password: "pw-alice-123", AccountType: uapi.AccountTypeUser}); err != nil {
			t.Fatal(err)
		}
		alice := fmt.Sprintf("@alice:%s", a.name)
		for i := range 3 {
			if _, err := b.client.LookupProfile(ctx, b.name, a.name, alice, ""); err != nil {
				t.Fatalf("B's request %d: %v", i, err)
			}
		}
		_, err := b.client.LookupProfile(ctx, b.name, a.name, alice, "")
		wantHTTP(t, err, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		for i := range 10 {
			if _, err := c.client.LookupProfile(ctx, c.name, a.name, alice, ""); err != nil {
				t.Fatalf("exempt C's request %d: %v", i, err)
			}
		}
		// 0.5/s refills one token in 2 s, slow enough that a loaded machine does not refill
		// B's bucket between its burst and its fourth request.
		time.Sleep(2100 * time.Millisecond)
		if _, err := b.client.LookupProfile(ctx, b.name, a.name, alice, ""); err != nil {
			t.Fatalf("B after the refill: %v", err)
		}
	})
}

// send sends a federation request through from's client, after edit changes the HTTP
// request (nil: as built).
func send(t *testing.T, from *node, fr *fclient.FederationRequest, edit func(*http.Request)) error {
	t.Helper()
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(req)
	}
	var out json.RawMessage
	return from.client.DoRequestAndParseResponse(context.Background(), req, &out)
}

func wantHTTP(t *testing.T, err error, status int, code string) {
	t.Helper()
	var httpErr gomatrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Code != status {
		t.Fatalf("want HTTP %d %s, got %v", status, code, err)
	}
	var body struct {
		ErrCode string `json:"errcode"`
	}
	if json.Unmarshal(httpErr.Contents, &body) != nil || body.ErrCode != code {
		t.Fatalf("want %s, got %s", code, httpErr.Contents)
	}
}

// TestKeyCacheSurvivesRestartAndExpiredKeysAreRefetched: after a restart A verifies B's
// requests with the key it cached, without asking B; once the key's valid_until_ts has
// passed, A fetches it again.
func TestKeyCacheSurvivesRestartAndExpiredKeysAreRefetched(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{validity: time.Hour})
		ctx := context.Background()
		const keyPath = "/_matrix/key/v2/server"
		profile := func() {
			t.Helper()
			_, err := b.client.LookupProfile(ctx, b.name, a.name, fmt.Sprintf("@nobody:%s", a.name), "")
			wantHTTP(t, err, http.StatusNotFound, "M_NOT_FOUND") // authenticated, then not found
		}
		profile()
		profile()
		if n := b.served(keyPath); n != 1 {
			t.Fatalf("B's keys fetched %d times, want 1", n)
		}
		a.restart()
		profile()
		if n := b.served(keyPath); n != 1 {
			t.Fatalf("after A's restart B's keys were fetched again (%d times)", n)
		}
		clk.advance(2 * time.Hour)
		profile()
		if n := b.served(keyPath); n != 2 {
			t.Fatalf("expired key: B's keys fetched %d times, want 2", n)
		}
		res, ok := a.lookup(b)
		if !ok || res.ValidUntilTS.Time().Before(clk.now()) {
			t.Fatalf("refetched key not stored: %+v", res)
		}
	})
}

// TestNotaryRejectsBadServerNames: 400 M_INVALID_PARAM, no fetch.
func TestNotaryRejectsBadServerNames(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	a := newNode(t, "file:"+filepath.Join(t.TempDir(), "fed.db"), clk, nodeOpts{})
	res, err := a.srv.Client().Get(a.srv.URL + "/_matrix/key/v2/query/" + "bad%20name!")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "M_INVALID_PARAM") {
		t.Fatalf("bad server name: %d %s", res.StatusCode, body)
	}
}
