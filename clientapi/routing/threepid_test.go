package routing_test

import (
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/dendrite/clientapi/routing"
	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/outbound"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// fakeIdentityServer is a small identity server over TLS on loopback: sessions validated
// out of band (sid -> "medium address"), and bindings ("medium address" -> mxid).
type fakeIdentityServer struct {
	t    *testing.T
	name string

	mu       sync.Mutex
	sessions map[string]string
	bindings map[string]string
	// unbindAuth is the Authorization header of the last unbind.
	unbindAuth string
}

const idAccessToken = "id-token"

func newFakeIdentityServer(t *testing.T) *fakeIdentityServer {
	f := &fakeIdentityServer{t: t, sessions: map[string]string{}, bindings: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/bind", f.bind)
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/unbind", f.unbind)
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	f.name = strings.TrimPrefix(srv.URL, "https://")
	return f
}

func (f *fakeIdentityServer) binding(medium, address string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bindings[medium+" "+address]
}

func (f *fakeIdentityServer) bindOutOfBand(medium, address, mxid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bindings[medium+" "+address] = mxid
}

func (f *fakeIdentityServer) validate(sid, medium, address string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions[sid] = medium + " " + address
}

func (f *fakeIdentityServer) bind(w http.ResponseWriter, r *http.Request) {
	var body struct {
		SID          string `json:"sid"`
		ClientSecret string `json:"client_secret"`
		MXID         string `json:"mxid"`
	}
	if r.Header.Get("Authorization") != "Bearer "+idAccessToken || json.NewDecoder(r.Body).Decode(&body) != nil || body.ClientSecret == "" {
		http.Error(w, `{"errcode":"M_UNAUTHORIZED"}`, http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	tp, ok := f.sessions[body.SID]
	if ok {
		f.bindings[tp] = body.MXID
	}
	f.mu.Unlock()
	if !ok {
		http.Error(w, `{"errcode":"M_NO_VALID_SESSION"}`, http.StatusBadRequest)
		return
	}
	medium, address, _ := strings.Cut(tp, " ")
	_ = json.NewEncoder(w).Encode(map[string]any{"medium": medium, "address": address, "mxid": body.MXID}) // the test sees a failed write as a failed bind
}

func (f *fakeIdentityServer) unbind(w http.ResponseWriter, r *http.Request) {
	var body struct {
		MXID     string `json:"mxid"`
		ThreePID struct {
			Medium  string `json:"medium"`
			Address string `json:"address"`
		} `json:"threepid"`
	}
	if json.NewDecoder(r.Body).Decode(&body) != nil {
		http.Error(w, `{"errcode":"M_BAD_JSON"}`, http.StatusBadRequest)
		return
	}
	key := body.ThreePID.Medium + " " + body.ThreePID.Address
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unbindAuth = r.Header.Get("Authorization")
	if f.bindings[key] != body.MXID {
		http.Error(w, `{"errcode":"M_NOT_FOUND"}`, http.StatusNotFound)
		return
	}
	delete(f.bindings, key)
	_, _ = w.Write([]byte(`{}`)) // the test sees a failed write as a failed unbind
}

// identityEnv is a client API whose identity server client allows loopback and accepts the
// test server's certificate.
func identityEnv(t *testing.T, db *sqlutil.DB, deny []string) *env {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := outbound.NewPolicy(deny)
	if err != nil {
		t.Fatal(err)
	}
	ids := identity.New(identity.Options{Deny: policy, SkipVerify: true, ServerName: serverName, KeyID: "ed25519:a", Key: key})
	return newEnvWith(t, db, openCfg(), func(a *routing.Accounts) { a.IdentityServers = ids })
}

func threePIDsOf(t *testing.T, e *env, token string) []any {
	t.Helper()
	res := e.want("GET", v3+"/account/3pid", token, nil, 200, "")
	list, ok := res["threepids"].([]any)
	if !ok {
		t.Fatalf("GET /account/3pid: %v", res)
	}
	return list
}

// TestBindAndUnbindThreePID: /account/3pid/bind binds through the identity server and records
// the 3PID; /account/3pid/delete and /unbind unbind it from the identity server recorded at
// bind time (or the one named), a 3PID bound out of band included; deactivation unbinds
// every 3PID. Unbind requests carry this server's X-Matrix signature.
func TestBindAndUnbindThreePID(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		is := newFakeIdentityServer(t)
		e := identityEnv(t, db, []string{})
		alice, token := e.register("alice", "pw")
		bind := func(sid, address string) {
			t.Helper()
			is.validate(sid, "email", address)
			e.want("POST", "/_matrix/client/unstable/account/3pid/bind", token,
				map[string]any{"id_server": is.name, "id_access_token": idAccessToken, "sid": sid, "client_secret": "cs"}, 200, "")
			if got := is.binding("email", address); got != alice {
				t.Fatalf("%s bound to %q, want %s", address, got, alice)
			}
		}

		bind("s1", "a1@example.org")
		list := threePIDsOf(t, e, token)
		if len(list) != 1 || list[0].(map[string]any)["address"] != "a1@example.org" {
			t.Fatalf("3pids after bind: %v", list)
		}
		e.want("POST", v3+"/account/3pid/bind", token,
			map[string]any{"id_server": is.name, "id_access_token": idAccessToken, "sid": "unknown", "client_secret": "cs"}, 400, "M_UNKNOWN")
		e.want("POST", v3+"/account/3pid/bind", token, map[string]any{"id_server": "https://x/", "sid": "s", "client_secret": "cs"}, 400, "M_INVALID_PARAM")

		// delete without id_server: the identity server recorded at bind time.
		if res := e.want("POST", v3+"/account/3pid/delete", token, map[string]any{"medium": "email", "address": "a1@example.org"}, 200, ""); res["id_server_unbind_result"] != "success" {
			t.Fatalf("delete: %v", res)
		}
		if is.binding("email", "a1@example.org") != "" || len(threePIDsOf(t, e, token)) != 0 {
			t.Fatal("3PID still bound or known after delete")
		}
		if auth := is.unbindAuth; !strings.HasPrefix(auth, "X-Matrix ") || !strings.Contains(auth, `origin="`+serverName+`"`) {
			t.Fatalf("unbind Authorization %q", auth)
		}

		// bound out of band: unknown here, so only a named identity server can unbind it.
		is.bindOutOfBand("email", "a2@example.org", alice)
		if res := e.want("POST", v3+"/account/3pid/delete", token, map[string]any{"medium": "email", "address": "a2@example.org"}, 200, ""); res["id_server_unbind_result"] != "no-support" {
			t.Fatalf("delete of an unknown 3PID: %v", res)
		}
		e.want("POST", v3+"/account/3pid/delete", token, map[string]any{"medium": "email", "address": "a2@example.org", "id_server": is.name}, 200, "")
		if is.binding("email", "a2@example.org") != "" {
			t.Fatal("out-of-band binding still there after delete with id_server")
		}

		// /unbind, with and without id_server: unbound there, still known here.
		bind("s3", "a3@example.org")
		e.want("POST", "/_matrix/client/unstable/account/3pid/unbind", token, map[string]any{"medium": "email", "address": "a3@example.org", "id_server": is.name}, 200, "")
		bind("s4", "a4@example.org")
		if res := e.want("POST", v3+"/account/3pid/unbind", token, map[string]any{"medium": "email", "address": "a4@example.org"}, 200, ""); res["id_server_unbind_result"] != "success" {
			t.Fatalf("unbind: %v", res)
		}
		if is.binding("email", "a3@example.org") != "" || is.binding("email", "a4@example.org") != "" || len(threePIDsOf(t, e, token)) != 2 {
			t.Fatalf("after unbind: %v", threePIDsOf(t, e, token))
		}

		// deactivation unbinds what is bound.
		bind("s5", "a5@example.org")
		res := e.want("POST", v3+"/account/deactivate", token, map[string]any{"auth": map[string]any{"type": "m.login.password", "user": "alice", "password": "pw"}}, 200, "")
		if is.binding("email", "a5@example.org") != "" {
			t.Fatalf("3PID still bound after deactivation (%v)", res)
		}
	})
}

// TestIdentityServerDenied: an identity server in global.deny_networks is never contacted.
func TestIdentityServerDenied(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		is := newFakeIdentityServer(t)
		e := identityEnv(t, db, outbound.DefaultDenyNetworks)
		_, token := e.register("alice", "pw")
		is.validate("s1", "email", "a@example.org")
		e.want("POST", v3+"/account/3pid/bind", token,
			map[string]any{"id_server": is.name, "id_access_token": idAccessToken, "sid": "s1", "client_secret": "cs"}, 403, "M_FORBIDDEN")
		if is.binding("email", "a@example.org") != "" {
			t.Fatal("a denied identity server was asked to bind")
		}
	})
}
