package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/test"
)

// unusual is content a key object may carry besides the fields the spec names: a client
// (or a later version of the spec) may add any, and they are covered by the signature.
var unusual = map[string]any{
	"org.example.extra": map[string]any{"text": "<&> é \u2028 \U0001F511", "n": []any{9007199254740991, -1, 0, true, nil}, "empty": map[string]any{}},
}

// signedWith is obj plus the unusual content, signed by sign.
func signedWith(t *testing.T, obj map[string]any, sign func([]byte) json.RawMessage) json.RawMessage {
	t.Helper()
	for k, v := range unusual {
		obj[k] = v
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return sign(b)
}

// sameKey fails unless got is want (an object as uploaded, in canonical JSON) with only
// "unsigned" added, in canonical form, and the signature by signer's key keyID verifies.
func sameKey(t *testing.T, what string, got, want json.RawMessage, signer string, keyID string, pub ed25519.PublicKey) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(got, &obj); err != nil {
		t.Fatalf("%s: %v in %s", what, err, got)
	}
	delete(obj, "unsigned")
	stripped, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(stripped)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(canonical, want) {
		t.Fatalf("%s changed on its way:\n got %s\nwant %s", what, canonical, want)
	}
	if err = gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), pub, got); err != nil {
		t.Fatalf("%s: signature by %s does not verify: %v", what, keyID, err)
	}
}

// verbatimKeys are a device's keys with unusual content, as uploaded.
type verbatimKeys struct {
	dk                        *test.DeviceKeys
	deviceKeys, otk, fallback json.RawMessage
	pub                       ed25519.PublicKey
	sign                      func([]byte) json.RawMessage
}

// uploadVerbatim uploads c's device keys, a one-time key and a fallback key, each with the
// unusual content and with key values padded and URL-safe, as some clients send them.
func uploadVerbatim(t *testing.T, c *mautrix.Client) *verbatimKeys {
	t.Helper()
	userID, deviceID := c.UserID.String(), c.DeviceID.String()
	v := &verbatimKeys{dk: test.NewDeviceKeys(t, userID, deviceID)}
	v.pub = v.dk.Private.Public().(ed25519.PublicKey)
	v.sign = func(b []byte) json.RawMessage {
		signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID("ed25519:"+deviceID), v.dk.Private, b)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	raw := []byte(v.pub)
	v.deviceKeys = signedWith(t, map[string]any{"user_id": userID, "device_id": deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + deviceID: v.dk.Ed25519(), "curve25519:" + deviceID: base64.StdEncoding.EncodeToString(raw[2:])}}, v.sign)
	v.otk = signedWith(t, map[string]any{"key": base64.StdEncoding.EncodeToString(raw)}, v.sign)
	v.fallback = signedWith(t, map[string]any{"key": base64.URLEncoding.EncodeToString(raw[1:]), "fallback": true}, v.sign)
	body := map[string]any{"device_keys": v.deviceKeys, "one_time_keys": map[string]json.RawMessage{"signed_curve25519:v1": v.otk},
		"fallback_keys": map[string]json.RawMessage{"signed_curve25519:vF": v.fallback}}
	if _, err := c.MakeRequest(context.Background(), http.MethodPost, c.BuildClientURL("v3", "keys", "upload"), body, nil); err != nil {
		t.Fatalf("upload keys: %v", err)
	}
	return v
}

// remoteKeys is the part of a /keys/query answer KeysVerbatimOverFederation reads.
type remoteKeys struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
}

// queryUntil queries userID's keys as c until done holds for the answer.
func queryUntil(t *testing.T, c *mautrix.Client, userID string, done func(*remoteKeys) bool) *remoteKeys {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var q remoteKeys
		if _, err := c.MakeRequest(context.Background(), http.MethodPost, c.BuildClientURL("v3", "keys", "query"),
			map[string]any{"device_keys": map[string][]string{userID: {}}, "timeout": 10000}, &q); err != nil {
			t.Fatal(err)
		}
		if done(&q) {
			return &q
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's keys as %s sees them: %+v", userID, c.UserID, q)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// claimVerbatim claims v's one-time key and then its fallback key as c, and checks both.
func claimVerbatim(t *testing.T, c *mautrix.Client, userID, deviceID string, v *verbatimKeys) {
	t.Helper()
	for _, want := range []struct {
		keyID string
		key   json.RawMessage
	}{{"signed_curve25519:v1", v.otk}, {"signed_curve25519:vF", v.fallback}} {
		var cl struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		if _, err := c.MakeRequest(context.Background(), http.MethodPost, c.BuildClientURL("v3", "keys", "claim"),
			map[string]any{"one_time_keys": map[string]map[string]string{userID: {deviceID: "signed_curve25519"}}}, &cl); err != nil {
			t.Fatal(err)
		}
		got, ok := cl.OneTimeKeys[userID][deviceID][want.keyID]
		if !ok {
			t.Fatalf("claim over federation: %+v, want %s", cl.OneTimeKeys, want.keyID)
		}
		sameKey(t, want.keyID, got, want.key, userID, "ed25519:"+deviceID, v.pub)
	}
}

// KeysVerbatimOverFederation: keys of a user of A that carry fields the spec does not name
// and unusual content (non-ASCII, HTML characters, U+2028, large integers, null, empty
// objects, padded and URL-safe base64 key values) reach a user of B exactly as the device
// and cross-signing keys signed them, and every signature verifies: through B's
// /keys/query (device, master and self-signing keys, fetched from A through
// /user/devices while no room is shared; a later device's keys through
// m.device_list_update once one is) and /keys/claim (a one-time key, then the fallback
// key).
func KeysVerbatimOverFederation(t *testing.T, urlA, nameA, urlB string) {
	ctx := context.Background()
	alice, bob := Register(t, urlA, "verbatim-alice"), Register(t, urlB, "verbatim-bob")
	userID, deviceID := alice.UserID.String(), alice.DeviceID.String()
	v := uploadVerbatim(t, alice)
	master := test.NewCrossSigningKey(t, userID, "master")
	self := test.NewCrossSigningKey(t, userID, "self_signing")
	masterKey := signedWith(t, map[string]any{"user_id": userID, "usage": []string{"master"},
		"keys": map[string]string{"ed25519:" + master.Public(): master.Public()}}, v.sign)
	selfKey := signedWith(t, map[string]any{"user_id": userID, "usage": []string{"self_signing"},
		"keys": map[string]string{"ed25519:" + self.Public(): self.Public()}}, func(b []byte) json.RawMessage { return master.Sign(t, b) })
	if _, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "keys", "device_signing", "upload"),
		map[string]any{"master_key": masterKey, "self_signing_key": selfKey}, nil); err != nil {
		t.Fatalf("upload cross-signing keys: %v", err)
	}
	q := queryUntil(t, bob, userID, func(q *remoteKeys) bool {
		return q.DeviceKeys[userID][deviceID] != nil && q.MasterKeys[userID] != nil && q.SelfSigningKeys[userID] != nil
	})
	sameKey(t, "device keys", q.DeviceKeys[userID][deviceID], v.deviceKeys, userID, "ed25519:"+deviceID, v.pub)
	sameKey(t, "master key", q.MasterKeys[userID], masterKey, userID, "ed25519:"+deviceID, v.pub)
	sameKey(t, "self-signing key", q.SelfSigningKeys[userID], selfKey, userID, "ed25519:"+master.Public(), master.Private.Public().(ed25519.PublicKey))
	claimVerbatim(t, bob, userID, deviceID, v)

	// Once bob shares a room with alice, B learns of her new device from the EDU.
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{nameA}}); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	bp := &Poller{C: bob}
	bp.Drain(t, func(*mautrix.RespSync) {})
	second := login(t, urlA, "verbatim-alice")
	v2 := uploadVerbatim(t, second)
	bp.Until(t, 60*time.Second, "alice's new device at B", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, alice.UserID)
	})
	secondID := second.DeviceID.String()
	// Logging in made the device (one update), uploading gave it keys (another).
	q = queryUntil(t, bob, userID, func(q *remoteKeys) bool { return bytes.Contains(q.DeviceKeys[userID][secondID], []byte(`"keys"`)) })
	sameKey(t, "second device's keys", q.DeviceKeys[userID][secondID], v2.deviceKeys, userID, "ed25519:"+secondID, v2.pub)
	claimVerbatim(t, bob, userID, secondID, v2)
}
