package identity_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/identity"
	"github.com/matrix-org/dendrite/internal/outbound"
)

// fakeIS is an identity server over loopback TLS with one key, whose validity it can
// withdraw, one binding and an invite store.
type fakeIS struct {
	name string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey

	mu      sync.Mutex
	revoked bool
	stored  map[string]string
}

func newFakeIS(t *testing.T) (*fakeIS, *httptest.Server) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIS{pub: pub, priv: priv, stored: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/identity/v2/hash_details", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"lookup_pepper":"pepper","algorithms":["none","sha256"]}`)) // the client sees a failed write
	})
	sum := sha256.Sum256([]byte("bob@example.org email pepper"))
	bobHash := base64.RawURLEncoding.EncodeToString(sum[:])
	mux.HandleFunc("POST /_matrix/identity/v2/lookup", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Algorithm string   `json:"algorithm"`
			Addresses []string `json:"addresses"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body) // a bad body finds nothing
		out := map[string]string{}
		for _, a := range body.Addresses {
			if body.Algorithm == "sha256" && a == bobHash {
				out[a] = "@bob:hs.example"
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"mappings": out}) // the client sees a failed write
	})
	mux.HandleFunc("POST /_matrix/identity/v2/store-invite", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"errcode":"M_UNAUTHORIZED"}`, http.StatusUnauthorized)
			return
		}
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body) // checked below
		f.mu.Lock()
		f.stored[body["address"]] = body["room_id"]
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"token": "t1", "display_name": "B...", "public_key": base64.RawStdEncoding.EncodeToString(pub),
			"public_keys": []map[string]string{{"public_key": base64.RawStdEncoding.EncodeToString(pub), "key_validity_url": "https://" + f.name + "/_matrix/identity/v2/pubkey/isvalid"}}})
	})
	mux.HandleFunc("GET /_matrix/identity/v2/pubkey/isvalid", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		valid := !f.revoked && r.URL.Query().Get("public_key") == base64.RawStdEncoding.EncodeToString(pub)
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]bool{"valid": valid}) // the client sees a failed write
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	f.name = strings.TrimPrefix(srv.URL, "https://")
	return f, srv
}

func client(t *testing.T, deny []string) *identity.Client {
	p, err := outbound.NewPolicy(deny)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	return identity.New(identity.Options{Deny: p, SkipVerify: true, ServerName: "hs.example", KeyID: "ed25519:a", Key: key})
}

// TestLookupAndStoreInvite: a bound address is found with the sha256 algorithm; store-invite
// sends the access token and returns the token and keys.
func TestLookupAndStoreInvite(t *testing.T) {
	is, _ := newFakeIS(t)
	c := client(t, []string{})
	ctx := context.Background()
	if mxid, err := c.Lookup(ctx, is.name, "tok", identity.ThreePID{Medium: "email", Address: "bob@example.org"}); err != nil || mxid != "@bob:hs.example" {
		t.Fatalf("lookup of a bound address: %q %v", mxid, err)
	}
	if mxid, err := c.Lookup(ctx, is.name, "tok", identity.ThreePID{Medium: "email", Address: "carol@example.org"}); err != nil || mxid != "" {
		t.Fatalf("lookup of an unbound address: %q %v", mxid, err)
	}
	inv, err := c.StoreInvite(ctx, is.name, "tok", identity.InviteRequest{ThreePID: identity.ThreePID{Medium: "email", Address: "carol@example.org"}, RoomID: "!r:hs.example", Sender: "@a:hs.example"})
	if err != nil || inv.Token != "t1" || len(inv.PublicKeys) != 1 {
		t.Fatalf("store-invite: %+v %v", inv, err)
	}
	var se *identity.StatusError
	if _, err = c.StoreInvite(ctx, is.name, "wrong", identity.InviteRequest{}); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("store-invite with a wrong token: %v", err)
	}
	if _, err = client(t, outbound.DefaultDenyNetworks).Lookup(ctx, is.name, "tok", identity.ThreePID{Medium: "email", Address: "bob@example.org"}); !errors.Is(err, outbound.ErrDenied) {
		t.Fatalf("lookup on a denied network: %v", err)
	}
}

// TestCheckInviteSigned: a signed block verifies with the invite's key while the identity
// server says the key is valid, whatever keys the block has besides mxid and token; a
// revoked key, another key, a changed block and an unreachable identity server all fail.
func TestCheckInviteSigned(t *testing.T) {
	is, srv := newFakeIS(t)
	c := client(t, []string{})
	ctx := context.Background()
	content, _ := json.Marshal(map[string]any{"public_key": base64.RawStdEncoding.EncodeToString(is.pub),
		"key_validity_url": "https://" + is.name + "/_matrix/identity/v2/pubkey/isvalid"})
	keys := identity.InviteKeys(content)
	sign := func(priv ed25519.PrivateKey, block string) json.RawMessage {
		t.Helper()
		signed, err := gomatrixserverlib.SignJSON(is.name, "ed25519:0", priv, []byte(block))
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	block := `{"mxid":"@bob:hs.example","sender":"@a:hs.example","token":"t1"}`
	good := sign(is.priv, block)
	if err := c.CheckInviteSigned(ctx, good, keys); err != nil {
		t.Fatalf("a good block: %v", err)
	}
	_, other, _ := ed25519.GenerateKey(nil)
	if err := c.CheckInviteSigned(ctx, sign(other, block), keys); !errors.Is(err, identity.ErrInviteNotSigned) {
		t.Fatalf("another key's signature: %v", err)
	}
	changed := json.RawMessage(strings.Replace(string(good), "@bob:", "@eve:", 1))
	if err := c.CheckInviteSigned(ctx, changed, keys); !errors.Is(err, identity.ErrInviteNotSigned) {
		t.Fatalf("a changed block: %v", err)
	}
	is.mu.Lock()
	is.revoked = true
	is.mu.Unlock()
	if err := c.CheckInviteSigned(ctx, good, keys); !errors.Is(err, identity.ErrInviteNotSigned) {
		t.Fatalf("a revoked key: %v", err)
	}
	srv.Close()
	if err := c.CheckInviteSigned(ctx, good, keys); err == nil {
		t.Fatal("an unreachable identity server's key was taken as valid")
	}
}
