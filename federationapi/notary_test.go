package federationapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// origin is a server whose /_matrix/key/v2/server answer a test sets.
type origin struct {
	name   spec.ServerName
	answer atomic.Pointer[func(w http.ResponseWriter)]
}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	o := &origin{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/key/v2/server" {
			http.NotFound(w, r)
			return
		}
		(*o.answer.Load())(w)
	}))
	t.Cleanup(srv.Close)
	o.name = spec.ServerName(srv.Listener.Addr().String())
	return o
}

// answerKey makes the origin publish one new key, keyID, valid until validUntil.
func (o *origin) answerKey(t *testing.T, keyID gomatrixserverlib.KeyID, validUntil spec.Timestamp) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	body, err := json.Marshal(gomatrixserverlib.ServerKeyFields{
		ServerName: o.name, ValidUntilTS: validUntil,
		VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{keyID: {Key: spec.Base64Bytes(priv.Public().(ed25519.PublicKey))}},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(string(o.name), keyID, priv, body)
	if err != nil {
		t.Fatal(err)
	}
	o.setAnswer(func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(signed) // a failed write fails the notary's fetch, which the test sees
	})
}

func (o *origin) setAnswer(f func(w http.ResponseWriter)) { o.answer.Store(&f) }

// TestNotaryServesExpiredAndDroppedKeys: the notary serves an origin's response even when
// its valid_until_ts has passed (the latest it has), keeps serving it when the origin then
// fails, keeps a key's response when the origin later publishes only another key, and
// serves it without asking the origin to whoever asks for keys valid until a time it covers
// (sytest "Key notary server should return an expired key if it can't find any others",
// "... must not overwrite a valid key with a spurious result from the origin server").
func TestNotaryServesExpiredAndDroppedKeys(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		notary, asker := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		o := newOrigin(t)
		expired := spec.AsTimestamp(time.Now().Add(-24 * time.Hour))
		query := func(keyID gomatrixserverlib.KeyID, minValid spec.Timestamp) []gomatrixserverlib.ServerKeys {
			t.Helper()
			keys, err := asker.client.LookupServerKeys(context.Background(), notary.name, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{
				{ServerName: o.name, KeyID: keyID}: minValid,
			})
			if err != nil {
				t.Fatal(err)
			}
			return keys
		}
		wantKey := func(what string, keys []gomatrixserverlib.ServerKeys, keyID gomatrixserverlib.KeyID, validUntil spec.Timestamp) {
			t.Helper()
			for _, k := range keys {
				if _, ok := k.VerifyKeys[keyID]; ok && k.ServerName == o.name && k.ValidUntilTS == validUntil {
					return
				}
			}
			t.Fatalf("%s: no response with %s valid until %d in %+v", what, keyID, validUntil, keys)
		}

		o.answerKey(t, "ed25519:key_1", expired)
		wantKey("expired key", query("ed25519:key_1", 0), "ed25519:key_1", expired)
		wantKey("expired key, refetched", query("ed25519:key_1", expired+1000), "ed25519:key_1", expired)
		o.setAnswer(func(w http.ResponseWriter) { http.Error(w, "{}", http.StatusBadRequest) })
		wantKey("origin failing", query("ed25519:key_1", expired+1000), "ed25519:key_1", expired)

		o.answerKey(t, "ed25519:key_2", expired+1000)
		query("ed25519:key_1", spec.AsTimestamp(time.Now()))
		wantKey("key_2", query("ed25519:key_2", 0), "ed25519:key_2", expired+1000)
		// A response that covers the requested time is served without asking the origin.
		o.setAnswer(func(w http.ResponseWriter) {
			t.Error("the origin was asked for a key the notary has")
			http.Error(w, "{}", http.StatusBadRequest)
		})
		wantKey("origin dropped key_1", query("ed25519:key_1", expired), "ed25519:key_1", expired)
	})
}
