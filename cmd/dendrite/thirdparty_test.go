package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// identityServer is an identity server over loopback TLS (the monoliths skip TLS
// validation and deny no networks): nothing is bound, store-invite keeps an invite under a
// new token, and its one key stays valid.
type identityServer struct {
	name string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey

	mu     sync.Mutex
	tokens []string
}

func startIdentityServer(t *testing.T) *identityServer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	is := &identityServer{pub: pub, priv: priv}
	mux := http.NewServeMux()
	write := func(w http.ResponseWriter, v any) {
		_ = json.NewEncoder(w).Encode(v) // the homeserver sees a failed write
	}
	mux.HandleFunc("GET /_matrix/identity/v2/hash_details", func(w http.ResponseWriter, _ *http.Request) {
		write(w, map[string]any{"lookup_pepper": "pepper", "algorithms": []string{"sha256"}})
	})
	mux.HandleFunc("POST /_matrix/identity/v2/lookup", func(w http.ResponseWriter, _ *http.Request) {
		write(w, map[string]any{"mappings": map[string]string{}})
	})
	mux.HandleFunc("POST /_matrix/identity/v2/store-invite", func(w http.ResponseWriter, _ *http.Request) {
		is.mu.Lock()
		token := "token" + string(rune('a'+len(is.tokens)))
		is.tokens = append(is.tokens, token)
		is.mu.Unlock()
		key := base64.RawStdEncoding.EncodeToString(pub)
		write(w, map[string]any{"token": token, "display_name": "c...", "public_key": key, "public_keys": []map[string]string{
			{"public_key": key, "key_validity_url": "https://" + is.name + "/_matrix/identity/v2/pubkey/isvalid"}}})
	})
	mux.HandleFunc("GET /_matrix/identity/v2/pubkey/isvalid", func(w http.ResponseWriter, r *http.Request) {
		write(w, map[string]bool{"valid": r.URL.Query().Get("public_key") == base64.RawStdEncoding.EncodeToString(pub)})
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	is.name = strings.TrimPrefix(srv.URL, "https://")
	return is
}

// sign signs block as the identity server would (ed25519:0 of its name) with priv.
func (is *identityServer) sign(t *testing.T, priv ed25519.PrivateKey, block map[string]string) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(block)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(is.name, "ed25519:0", priv, b)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// inviteByEmail sends a third-party invite of an unbound address and returns the token of
// the m.room.third_party_invite it put in the room.
func (is *identityServer) inviteByEmail(t *testing.T, c *mautrix.Client, room id.RoomID) string {
	t.Helper()
	if _, err := c.InviteUserByThirdParty(context.Background(), room, &mautrix.ReqInvite3PID{IDServer: is.name, Medium: "email", Address: "carol@example.org"}); err != nil {
		t.Fatalf("third-party invite: %v", err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.tokens[len(is.tokens)-1]
}

// joinSigned is POST /join/{roomId} with third_party_signed.
func joinSigned(c *mautrix.Client, room id.RoomID, signed json.RawMessage) error {
	body := map[string]json.RawMessage{"third_party_signed": signed}
	_, err := c.MakeRequest(context.Background(), http.MethodPost, c.BuildClientURL("v3", "join", room), body, nil)
	return err
}

// TestMonolithThirdPartySignedJoin: a user accepts a third-party invite with /join's
// third_party_signed, the block (sender, mxid, token) signed by the identity server as the
// spec's client-server API gives it. The server turns it into an invite from the
// third-party invite's sender and joins: the auth rules check the signature over the whole
// block (gomatrixserverlib checked it over mxid, token and signatures only, so every real
// block failed, 403). A block signed by another key is refused (403 M_FORBIDDEN) and the
// user is not a member.
func TestMonolithThirdPartySignedJoin(t *testing.T) {
	s := startFedServer(t)
	is := startIdentityServer(t)
	ctx := context.Background()
	alice, bob, eve := e2e.Register(t, s.URL(), "alice"), e2e.Register(t, s.URL(), "bob"), e2e.Register(t, s.URL(), "eve")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID

	_, other, _ := ed25519.GenerateKey(nil)
	token := is.inviteByEmail(t, alice, room)
	forged := is.sign(t, other, map[string]string{"mxid": eve.UserID.String(), "sender": alice.UserID.String(), "token": token})
	e2e.WantErrCode(t, joinSigned(eve, room, forged), http.StatusForbidden, "M_FORBIDDEN")
	var m event.MemberEventContent
	if err = alice.StateEvent(ctx, room, event.StateMember, eve.UserID.String(), &m); err == nil {
		t.Fatalf("eve's membership after a forged block: %+v", m)
	}

	signed := is.sign(t, is.priv, map[string]string{"mxid": bob.UserID.String(), "sender": alice.UserID.String(), "token": token})
	if err = joinSigned(bob, room, signed); err != nil {
		t.Fatalf("join with third_party_signed: %v", err)
	}
	if err = alice.StateEvent(ctx, room, event.StateMember, bob.UserID.String(), &m); err != nil || m.Membership != event.MembershipJoin {
		t.Fatalf("bob's membership: %+v %v", m, err)
	}
}

// onBind is the identity server's POST /_matrix/federation/v1/3pid/onbind to the server of
// the user the address was bound to, with the invite stored under token.
func (is *identityServer) onBind(t *testing.T, s *fedServer, mxid id.UserID, room id.RoomID, sender id.UserID, token string) {
	t.Helper()
	signed := is.sign(t, is.priv, map[string]string{"mxid": mxid.String(), "sender": sender.String(), "token": token})
	body, err := json.Marshal(map[string]any{"medium": "email", "address": "carol@example.org", "mxid": mxid,
		"invites": []map[string]any{{"medium": "email", "address": "carol@example.org", "mxid": mxid, "room_id": room,
			"sender": sender, "token": token, "signed": signed}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := insecure.Post(s.fedURL+"/_matrix/federation/v1/3pid/onbind", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close() // nolint: errcheck // read-only
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("onbind: %d %s\n%s", res.StatusCode, b, s.logs)
	}
}

// TestMonolithsThirdPartyInviteBothServers: alice of A invites an email address to a room
// that bob of B is in. Bob sees the m.room.third_party_invite; the address is bound to
// carol of B, whose server gets the identity server's /3pid/onbind while A is unreachable.
// B, in the room, makes carol's invite itself (spec "Third-party invites": the invited
// server auths the event and sends it when it is in the room): onbind succeeds, bob and
// carol see the invite at once, and alice sees it, with the invite's display name, once A
// can be reached (A accepts the invite signed by B alone, as the spec allows for
// third-party invites). Carol joins, and both alice and bob see the join. Before, B had A
// make the invite (exchange_third_party_invite) and onbind failed while A was down.
func TestMonolithsThirdPartyInviteBothServers(t *testing.T) {
	a, b, partition := startPartitionable(t)
	is := startIdentityServer(t)
	ctx := context.Background()
	alice, bob, carol := e2e.Register(t, a.URL(), "alice"), e2e.Register(t, b.URL(), "bob"), e2e.Register(t, b.URL(), "carol")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err = bob.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	va, vb := newView("alice", alice, room), newView("bob", bob, room)
	va.until(t, "bob's join", func(v *view) bool { return v.has(event.StateMember.Type, bob.UserID.String(), "join") })

	token := is.inviteByEmail(t, alice, room)
	vb.until(t, "the third-party invite", func(v *view) bool { return v.has("m.room.third_party_invite", token, "") })

	partition(true)
	is.onBind(t, b, carol.UserID, room, alice.UserID, token)
	vb.until(t, "carol's invite", func(v *view) bool { return v.has(event.StateMember.Type, carol.UserID.String(), "invite") })
	vc := newView("carol", carol, room)
	vc.until(t, "her invite", func(v *view) bool { return v.invite != nil })
	partition(false)

	va.until(t, "carol's invite", func(v *view) bool { return v.has(event.StateMember.Type, carol.UserID.String(), "invite") })
	var m struct {
		Membership       string `json:"membership"`
		ThirdPartyInvite struct {
			DisplayName string `json:"display_name"`
		} `json:"third_party_invite"`
	}
	if err = alice.StateEvent(ctx, room, event.StateMember, carol.UserID.String(), &m); err != nil || m.Membership != "invite" || m.ThirdPartyInvite.DisplayName != "c..." {
		t.Fatalf("carol's membership: %+v %v", m, err)
	}
	if _, err = carol.JoinRoom(ctx, room.String(), nil); err != nil {
		t.Fatalf("carol joins: %v", err)
	}
	va.until(t, "carol's join", func(v *view) bool { return v.has(event.StateMember.Type, carol.UserID.String(), "join") })
	vb.until(t, "carol's join", func(v *view) bool { return v.has(event.StateMember.Type, carol.UserID.String(), "join") })
}
