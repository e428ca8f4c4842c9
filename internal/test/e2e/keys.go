package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test"
)

// uploadKeys uploads a device's signed keys, n one-time keys named <prefix><i> and, when
// fallback, a fallback key, and returns the one-time key count the server answers.
func uploadKeys(t *testing.T, c *mautrix.Client, dk *test.DeviceKeys, n int, prefix string, fallback bool) int {
	t.Helper()
	otks := map[string]json.RawMessage{}
	for i := range n {
		otks[fmt.Sprintf("signed_curve25519:%s%d", prefix, i)] = dk.OneTimeKey(t, false)
	}
	body := map[string]any{"device_keys": dk.JSON(t), "one_time_keys": otks}
	if fallback {
		body["fallback_keys"] = map[string]json.RawMessage{"signed_curve25519:" + prefix + "F": dk.OneTimeKey(t, true)}
	}
	var res struct {
		Counts map[string]int `json:"one_time_key_counts"`
	}
	if _, err := c.MakeRequest(context.Background(), http.MethodPost, c.BuildClientURL("v3", "keys", "upload"), body, &res); err != nil {
		t.Fatalf("upload keys of %s: %v", c.DeviceID, err)
	}
	return res.Counts["signed_curve25519"]
}

// Keys is the end-to-end key story on one server with a Matrix client library: device keys
// signed by the device and checked by the server, queried by another user (who checks the
// signature), one-time keys claimed each once and then the fallback key, /sync's key
// counts, refused uploads, and a deleted device's keys gone.
func Keys(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "keyalice"), Register(t, baseURL, "keybob")
	dk := test.NewDeviceKeys(t, alice.UserID.String(), alice.DeviceID.String())
	if n := uploadKeys(t, alice, dk, 5, "a", true); n != 5 {
		t.Fatalf("one-time key count after upload %d", n)
	}
	res, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.DeviceOTKCount.SignedCurve25519 != 5 || len(res.FallbackKeys) != 1 || res.FallbackKeys[0] != "signed_curve25519" {
		t.Fatalf("sync key counts %+v, fallback %v", res.DeviceOTKCount, res.FallbackKeys)
	}

	q, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := q.DeviceKeys[alice.UserID][alice.DeviceID]
	if !ok {
		t.Fatalf("alice's keys not in %+v", q.DeviceKeys)
	}
	raw, _ := json.Marshal(got) // plain data
	pub, _ := base64.RawStdEncoding.DecodeString(got.Keys.GetEd25519(alice.DeviceID).String())
	if err = gomatrixserverlib.VerifyJSON(alice.UserID.String(), gomatrixserverlib.KeyID("ed25519:"+alice.DeviceID), ed25519.PublicKey(pub), raw); err != nil {
		t.Fatalf("queried device keys do not verify: %v (%s)", err, raw)
	}

	claimed := map[id.KeyID]int{}
	for range 7 {
		cl, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{alice.UserID: {alice.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil {
			t.Fatal(err)
		}
		for keyID := range cl.OneTimeKeys[alice.UserID][alice.DeviceID] {
			claimed[keyID]++
		}
	}
	if len(claimed) != 6 || claimed["signed_curve25519:aF"] != 2 {
		t.Fatalf("claims handed out %v", claimed)
	}
	if res, err = alice.SyncRequest(ctx, 0, "", "", false, ""); err != nil || res.DeviceOTKCount.SignedCurve25519 != 0 || len(res.FallbackKeys) != 0 {
		t.Fatalf("sync key counts after the claims %+v, fallback %v (%v)", res.DeviceOTKCount, res.FallbackKeys, err)
	}

	// Keys for another device, or signed by another key, are refused.
	wrong := test.NewDeviceKeys(t, alice.UserID.String(), "OTHERDEVICE")
	_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "keys", "upload"), map[string]any{"device_keys": wrong.JSON(t)}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "keys", "claim"), map[string]any{}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_MISSING_PARAM")

	// A second device's keys appear, and go with the device.
	second := Client(t, baseURL)
	login, err := second.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "keyalice"}, Password: "password-keyalice"})
	if err != nil {
		t.Fatal(err)
	}
	second.UserID, second.AccessToken, second.DeviceID = login.UserID, login.AccessToken, login.DeviceID
	uploadKeys(t, second, test.NewDeviceKeys(t, alice.UserID.String(), second.DeviceID.String()), 1, "b", false)
	if q, err = bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}}); err != nil || len(q.DeviceKeys[alice.UserID]) != 2 {
		t.Fatalf("two devices' keys: %+v %v", q, err)
	}
	err = alice.DeleteDevice(ctx, second.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: map[string]any{"type": "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": "keyalice"}, "password": "password-keyalice"}})
	if err != nil {
		t.Fatal(err)
	}
	if q, err = bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}}); err != nil || len(q.DeviceKeys[alice.UserID]) != 1 {
		t.Fatalf("keys after deleting the second device: %+v %v", q, err)
	}
	cl, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{alice.UserID: {second.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
	if err != nil || len(cl.OneTimeKeys[alice.UserID]) != 0 {
		t.Fatalf("claim of a deleted device's key: %+v %v", cl, err)
	}
}

// login logs a new device of an account registered by Register in.
func login(t *testing.T, baseURL, name string) *mautrix.Client {
	t.Helper()
	c := Client(t, baseURL)
	res, err := c.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name}, Password: "password-" + name})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	c.UserID, c.AccessToken, c.DeviceID = res.UserID, res.AccessToken, res.DeviceID
	return c
}

// keyChanges is GET /keys/changes (mautrix's GetKeyChanges sends a POST, which the spec
// does not define).
func keyChanges(t *testing.T, c *mautrix.Client, from, to string) *mautrix.RespKeyChanges {
	t.Helper()
	var res *mautrix.RespKeyChanges
	u := c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "keys", "changes"}, map[string]string{"from": from, "to": to})
	if _, err := c.MakeRequest(context.Background(), http.MethodGet, u, nil, &res); err != nil {
		t.Fatalf("keys/changes: %v", err)
	}
	return res
}

// DeviceLists is the device-list story: a user sees in /sync's device_lists.changed the
// key changes of users they share a room with (and /keys/changes between two tokens
// agrees), never those of a stranger, sees a user who is invited to or joins a shared room,
// and sees in device_lists.left a user who no longer shares any room.
func DeviceLists(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob, carol := Register(t, baseURL, "listalice"), Register(t, baseURL, "listbob"), Register(t, baseURL, "listcarol")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	p := &Poller{C: bob}
	p.Drain(t, func(*mautrix.RespSync) {})
	before := p.Since

	// A stranger's new keys first, then a room-mate's new device: bob sees alice only.
	uploadKeys(t, carol, test.NewDeviceKeys(t, carol.UserID.String(), carol.DeviceID.String()), 1, "c", false)
	second := login(t, baseURL, "listalice")
	uploadKeys(t, second, test.NewDeviceKeys(t, alice.UserID.String(), second.DeviceID.String()), 1, "a", false)
	p.Until(t, 20*time.Second, "alice in device_lists.changed", func(res *mautrix.RespSync) bool {
		if slices.Contains(res.DeviceLists.Changed, carol.UserID) {
			t.Fatalf("bob sees the device list of carol, with whom he shares no room: %+v", res.DeviceLists)
		}
		return slices.Contains(res.DeviceLists.Changed, alice.UserID)
	})
	kc := keyChanges(t, bob, before, p.Since)
	if !slices.Contains(kc.Changed, alice.UserID) || slices.Contains(kc.Changed, carol.UserID) {
		t.Fatalf("keys/changes %+v", kc)
	}
	if kc = keyChanges(t, bob, p.Since, p.Since); len(kc.Changed)+len(kc.Left) != 0 {
		t.Fatalf("keys/changes of an empty range %+v", kc)
	}

	// An invited user is a device list to track too: clients encrypt to invited members.
	dave := Register(t, baseURL, "listdave")
	if _, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: dave.UserID}); err != nil {
		t.Fatal(err)
	}
	p.Until(t, 20*time.Second, "dave in device_lists.changed after his invite", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, dave.UserID)
	})

	// carol joins: bob learns to track her devices; then alice leaves the only shared room.
	if _, err = carol.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	p.Until(t, 20*time.Second, "carol in device_lists.changed after joining", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, carol.UserID)
	})
	if _, err = alice.LeaveRoom(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	p.Until(t, 20*time.Second, "alice in device_lists.left", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Left, alice.UserID)
	})
}

// CrossSigning is the cross-signing story with a client library: a first upload of the
// three keys needs no authentication, a replacement asks for the password (401 with the
// flows) and succeeds with it; another user sees the master and self-signing keys but
// never the user-signing key; a device signed by the self-signing key carries the
// signature for others, a forged signature is refused per key, and room-mates see the
// user in device_lists.changed.
func CrossSigning(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice, bob := Register(t, baseURL, "csalice"), Register(t, baseURL, "csbob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	dk := test.NewDeviceKeys(t, alice.UserID.String(), alice.DeviceID.String())
	uploadKeys(t, alice, dk, 0, "x", false)
	p := &Poller{C: bob}
	p.Drain(t, func(*mautrix.RespSync) {})

	master := test.NewCrossSigningKey(t, alice.UserID.String(), "master")
	self := test.NewCrossSigningKey(t, alice.UserID.String(), "self_signing")
	user := test.NewCrossSigningKey(t, alice.UserID.String(), "user_signing")
	signingURL := alice.BuildClientURL("v3", "keys", "device_signing", "upload")
	body := map[string]any{"master_key": master.JSON(t, nil), "self_signing_key": self.JSON(t, master), "user_signing_key": user.JSON(t, master)}
	if _, err = alice.MakeRequest(ctx, http.MethodPost, signingURL, body, nil); err != nil {
		t.Fatalf("first cross-signing upload: %v", err)
	}
	_, err = alice.MakeRequest(ctx, http.MethodPost, signingURL, map[string]any{"user_signing_key": user.JSON(t, self)}, nil)
	WantErrCode(t, err, http.StatusBadRequest, "M_INVALID_SIGNATURE")
	replacement := test.NewCrossSigningKey(t, alice.UserID.String(), "master")
	_, err = alice.MakeRequest(ctx, http.MethodPost, signingURL, map[string]any{"master_key": replacement.JSON(t, nil)}, nil)
	wantUIA(t, err, "")

	q, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := q.MasterKeys[alice.UserID].Keys[id.NewKeyID(id.KeyAlgorithmEd25519, master.Public())]; !ok || len(q.SelfSigningKeys[alice.UserID].Keys) != 1 || len(q.UserSigningKeys) != 0 {
		t.Fatalf("bob's view of alice's cross-signing keys: %+v %+v %+v", q.MasterKeys, q.SelfSigningKeys, q.UserSigningKeys)
	}

	// alice cross-signs her device; a signature by another key fails for that key only.
	devKeys := map[string]any{}
	raw, _ := json.Marshal(q.DeviceKeys[alice.UserID][alice.DeviceID]) // plain data
	if err = json.Unmarshal(raw, &devKeys); err != nil {
		t.Fatal(err)
	}
	delete(devKeys, "signatures")
	delete(devKeys, "unsigned")
	plain, _ := json.Marshal(devKeys) // plain data
	var res struct {
		Failures map[string]map[string]map[string]string `json:"failures"`
	}
	sigURL := alice.BuildClientURL("v3", "keys", "signatures", "upload")
	forged := test.NewCrossSigningKey(t, alice.UserID.String(), "self_signing")
	_, err = alice.MakeRequest(ctx, http.MethodPost, sigURL, map[string]any{alice.UserID.String(): map[string]any{alice.DeviceID.String(): forged.Sign(t, plain)}}, &res)
	if err != nil || res.Failures[alice.UserID.String()][alice.DeviceID.String()]["errcode"] != "M_INVALID_SIGNATURE" {
		t.Fatalf("forged signature: %+v %v", res, err)
	}
	res.Failures = nil
	_, err = alice.MakeRequest(ctx, http.MethodPost, sigURL, map[string]any{alice.UserID.String(): map[string]any{alice.DeviceID.String(): self.Sign(t, plain)}}, &res)
	if err != nil || len(res.Failures) != 0 {
		t.Fatalf("device signature: %+v %v", res, err)
	}
	p.Until(t, 20*time.Second, "alice in device_lists.changed after cross-signing", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, alice.UserID)
	})
	if q, err = bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}}); err != nil {
		t.Fatal(err)
	}
	if q.DeviceKeys[alice.UserID][alice.DeviceID].Signatures[alice.UserID][id.NewKeyID(id.KeyAlgorithmEd25519, self.Public())] == "" {
		t.Fatalf("alice's device lacks her self-signing signature: %+v", q.DeviceKeys[alice.UserID][alice.DeviceID].Signatures)
	}

	// With the password the master key can be replaced.
	body = map[string]any{"master_key": replacement.JSON(t, nil), "auth": map[string]any{"type": "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": "csalice"}, "password": "password-csalice"}}
	if _, err = alice.MakeRequest(ctx, http.MethodPost, signingURL, body, nil); err != nil {
		t.Fatalf("replacement with the password: %v", err)
	}
}

// KeysOverFederation is the key story across two servers: a user of B sharing a room with
// a user of A sees her new device and her cross-signing keys in device_lists.changed (the
// m.device_list_update and m.signing_key_update EDUs), queries her keys (device keys,
// checked by B and by the test, and the master and self-signing keys), claims her one-time
// keys (each once) and then her fallback key, and gets a failure entry, not an error, for a
// server that cannot be reached.
func KeysOverFederation(t *testing.T, urlA, nameA, urlB string) {
	ctx := context.Background()
	alice, bob := Register(t, urlA, "fedkeys-alice"), Register(t, urlB, "fedkeys-bob")
	deviceListsOverFederation(t, urlA, nameA, alice, bob)
	dk := test.NewDeviceKeys(t, alice.UserID.String(), alice.DeviceID.String())
	uploadKeys(t, alice, dk, 2, "f", true)
	master := test.NewCrossSigningKey(t, alice.UserID.String(), "master")
	self := test.NewCrossSigningKey(t, alice.UserID.String(), "self_signing")
	if _, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "keys", "device_signing", "upload"),
		map[string]any{"master_key": master.JSON(t, nil), "self_signing_key": self.JSON(t, master)}, nil); err != nil {
		t.Fatal(err)
	}

	// B answers from its copy of alice's device list, which her server's updates refresh:
	// poll until they arrived.
	const nowhere = "@nobody:127.0.0.1:1"
	deadline := time.Now().Add(60 * time.Second)
	for {
		q, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}, nowhere: {}}, Timeout: 5000})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.Failures["127.0.0.1:1"]; !ok {
			t.Fatalf("no failure for an unreachable server: %+v", q.Failures)
		}
		got, ok := q.DeviceKeys[alice.UserID][alice.DeviceID]
		_, hasMaster := q.MasterKeys[alice.UserID].Keys[id.NewKeyID(id.KeyAlgorithmEd25519, master.Public())]
		if ok && got.Keys.GetEd25519(alice.DeviceID).String() == dk.Ed25519() && hasMaster && len(q.SelfSigningKeys[alice.UserID].Keys) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's keys over federation: %+v %+v %+v", q.DeviceKeys, q.MasterKeys, q.SelfSigningKeys)
		}
		time.Sleep(200 * time.Millisecond)
	}

	claimed := map[id.KeyID]int{}
	for range 3 {
		cl, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{alice.UserID: {alice.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
		if err != nil {
			t.Fatal(err)
		}
		for keyID := range cl.OneTimeKeys[alice.UserID][alice.DeviceID] {
			claimed[keyID]++
		}
	}
	if len(claimed) != 3 || claimed["signed_curve25519:fF"] != 1 {
		t.Fatalf("claims over federation handed out %v", claimed)
	}
}

// deviceListsOverFederation: bob (B) joins alice's room (A); alice's new device keys reach
// bob's device_lists.changed, and bob's reach alice's.
func deviceListsOverFederation(t *testing.T, urlA, nameA string, alice, bob *mautrix.Client) {
	ctx := context.Background()
	const wait = 60 * time.Second // includes a federation sender's backoff
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	ap, bp := &Poller{C: alice}, &Poller{C: bob}
	ap.Drain(t, func(*mautrix.RespSync) {})
	if _, err = bob.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{nameA}}); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	ap.Until(t, wait, "bob's join at A", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, bob.UserID)
	})
	bp.Drain(t, func(*mautrix.RespSync) {})
	second := login(t, urlA, "fedkeys-alice")
	uploadKeys(t, second, test.NewDeviceKeys(t, alice.UserID.String(), second.DeviceID.String()), 0, "s", false)
	bp.Until(t, wait, "alice's new device at B", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, alice.UserID)
	})
	// B tells bob of the change only once its copy of alice's device list has it.
	q, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := q.DeviceKeys[alice.UserID][second.DeviceID]; !ok {
		t.Fatalf("alice's new device missing from B's /keys/query after device_lists.changed: %+v", q.DeviceKeys)
	}
	uploadKeys(t, bob, test.NewDeviceKeys(t, bob.UserID.String(), bob.DeviceID.String()), 0, "b", false)
	ap.Until(t, wait, "bob's device keys at A", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, bob.UserID)
	})
}

// KeyBackup is the server-side key backup story: versions with count and etag, the
// replace-if-better rule for a session's key, M_WRONG_ROOM_KEYS_VERSION for an old version,
// and a restore from another device of the same user.
func KeyBackup(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice := Register(t, baseURL, "backupalice")
	versionURL := alice.BuildClientURL("v3", "room_keys", "version")
	_, err := alice.MakeRequest(ctx, http.MethodGet, versionURL, nil, nil)
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	create := func() string {
		t.Helper()
		var res struct {
			Version string `json:"version"`
		}
		body := map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]string{"public_key": "abc"}}
		if _, err := alice.MakeRequest(ctx, http.MethodPost, versionURL, body, &res); err != nil || res.Version == "" {
			t.Fatalf("create backup version: %+v %v", res, err)
		}
		return res.Version
	}
	type version struct {
		Version string `json:"version"`
		Count   int    `json:"count"`
		ETag    string `json:"etag"`
	}
	getVersion := func() version {
		t.Helper()
		var v version
		if _, err := alice.MakeRequest(ctx, http.MethodGet, versionURL, nil, &v); err != nil {
			t.Fatalf("get backup version: %v", err)
		}
		return v
	}
	v1 := create()
	empty := getVersion()
	if empty.Version != v1 || empty.Count != 0 {
		t.Fatalf("new version %+v", empty)
	}
	sessionURL := func(c *mautrix.Client, v string) string {
		return c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "room_keys", "keys", "!room:x", "sess"}, map[string]string{"version": v})
	}
	key := func(index int, verified bool) map[string]any {
		return map[string]any{"first_message_index": index, "forwarded_count": 0, "is_verified": verified, "session_data": map[string]int{"index": index}}
	}
	for _, k := range []map[string]any{key(5, false), key(10, false), key(20, true)} {
		if _, err = alice.MakeRequest(ctx, http.MethodPut, sessionURL(alice, v1), k, nil); err != nil {
			t.Fatalf("put key: %v", err)
		}
	}
	var stored struct {
		FirstMessageIndex int  `json:"first_message_index"`
		IsVerified        bool `json:"is_verified"`
	}
	if _, err = alice.MakeRequest(ctx, http.MethodGet, sessionURL(alice, v1), nil, &stored); err != nil || stored.FirstMessageIndex != 20 || !stored.IsVerified {
		t.Fatalf("the verified key should have replaced the others: %+v %v", stored, err)
	}
	after := getVersion()
	if after.Count != 1 || after.ETag == empty.ETag {
		t.Fatalf("version after storing keys %+v (before %+v)", after, empty)
	}
	// A worse key changes nothing, not even the etag.
	if _, err = alice.MakeRequest(ctx, http.MethodPut, sessionURL(alice, v1), key(1, false), nil); err != nil {
		t.Fatal(err)
	}
	if again := getVersion(); again.ETag != after.ETag {
		t.Fatalf("a worse key changed the etag: %+v then %+v", after, again)
	}

	// A new version makes the old one refuse keys, naming the current one.
	v2 := create()
	status, body := call(t, alice, http.MethodPut, sessionURL(alice, v1), key(0, true))
	if status != http.StatusForbidden || body["errcode"] != "M_WRONG_ROOM_KEYS_VERSION" || body["current_version"] != v2 {
		t.Fatalf("put into an old version: %d %v", status, body)
	}
	// The old version's keys are restored by another device.
	other := login(t, baseURL, "backupalice")
	var rooms struct {
		Rooms map[string]struct {
			Sessions map[string]json.RawMessage `json:"sessions"`
		} `json:"rooms"`
	}
	allURL := other.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "room_keys", "keys"}, map[string]string{"version": v1})
	if _, err = other.MakeRequest(ctx, http.MethodGet, allURL, nil, &rooms); err != nil || len(rooms.Rooms["!room:x"].Sessions) != 1 {
		t.Fatalf("restore: %+v %v", rooms, err)
	}
	_, err = other.MakeRequest(ctx, http.MethodGet, sessionURL(other, v2), nil, nil)
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	if _, err = alice.MakeRequest(ctx, http.MethodDelete, alice.BuildClientURL("v3", "room_keys", "version", v1), nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err = alice.MakeRequest(ctx, http.MethodGet, allURL, nil, nil)
	WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
}

// KeyBackupAuthData: auth_data and session_data are algorithm-dependent. For the spec's algorithm
// they must be objects; for an algorithm the spec does not define (sytest's "m.megolm_backup.v1")
// any JSON value is kept and returned as sent, through creation and update of a version and through
// storing keys, and a user can hold more than ten versions, the latest of which is the current one.
func KeyBackupAuthData(t *testing.T, baseURL string) {
	ctx := context.Background()
	alice := Register(t, baseURL, "backupauthdata")
	versionURL := alice.BuildClientURL("v3", "room_keys", "version")
	status, body := call(t, alice, http.MethodPost, versionURL, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": "a string"})
	if status != http.StatusBadRequest || body["errcode"] != "M_BAD_JSON" {
		t.Fatalf("the spec's algorithm with a string auth_data: %d %v", status, body)
	}
	status, body = call(t, alice, http.MethodPost, versionURL, map[string]any{"algorithm": "m.megolm_backup.v1"})
	if status != http.StatusBadRequest || body["errcode"] != "M_MISSING_PARAM" {
		t.Fatalf("no auth_data: %d %v", status, body)
	}
	type version struct {
		Version   string          `json:"version"`
		Algorithm string          `json:"algorithm"`
		AuthData  json.RawMessage `json:"auth_data"`
	}
	var created version
	for i := range 12 {
		if _, err := alice.MakeRequest(ctx, http.MethodPost, versionURL, map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": "anopaquestring"}, &created); err != nil {
			t.Fatalf("create backup version %d: %v", i+1, err)
		}
	}
	var got version
	if _, err := alice.MakeRequest(ctx, http.MethodGet, versionURL, nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != created.Version || got.Algorithm != "m.megolm_backup.v1" || string(got.AuthData) != `"anopaquestring"` {
		t.Fatalf("latest version %+v, want version %s with the string auth_data", got, created.Version)
	}
	thisURL := alice.BuildClientURL("v3", "room_keys", "version", created.Version)
	update := map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": "adifferentopaquestring", "version": created.Version}
	if _, err := alice.MakeRequest(ctx, http.MethodPut, thisURL, update, nil); err != nil {
		t.Fatalf("update: %v", err)
	}
	if _, err := alice.MakeRequest(ctx, http.MethodGet, thisURL, nil, &got); err != nil || string(got.AuthData) != `"adifferentopaquestring"` {
		t.Fatalf("after update %+v %v", got, err)
	}
	keyBackupSessionData(t, alice, created.Version)
}

// keyBackupSessionData: a key's session_data is algorithm-dependent like auth_data. In version v
// (algorithm "m.megolm_backup.v1") a string is stored and returned as sent, the better-key rule and
// the number checks still hold, and null is refused; a version of the spec's algorithm still
// refuses a string.
func keyBackupSessionData(t *testing.T, alice *mautrix.Client, v string) {
	ctx := context.Background()
	sessionURL := func(version string) string {
		return alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "room_keys", "keys", "!room:x", "sess"}, map[string]string{"version": version})
	}
	key := func(index int, data any) map[string]any {
		return map[string]any{"first_message_index": index, "forwarded_count": 0, "is_verified": false, "session_data": data}
	}
	type session struct {
		FirstMessageIndex int             `json:"first_message_index"`
		SessionData       json.RawMessage `json:"session_data"`
	}
	for _, k := range []map[string]any{key(3, "anopaquestring"), key(1, "abetteropaquestring"), key(2, "aworseopaquestring")} {
		if _, err := alice.MakeRequest(ctx, http.MethodPut, sessionURL(v), k, nil); err != nil {
			t.Fatalf("put a key with a string session_data: %v", err)
		}
	}
	var got session
	if _, err := alice.MakeRequest(ctx, http.MethodGet, sessionURL(v), nil, &got); err != nil || got.FirstMessageIndex != 1 || string(got.SessionData) != `"abetteropaquestring"` {
		t.Fatalf("stored key %+v %v, want index 1 with the better string", got, err)
	}
	for _, c := range []struct {
		name, errcode string
		body          map[string]any
	}{
		{"null session_data", "M_MISSING_PARAM", key(0, nil)},
		{"no session_data", "M_MISSING_PARAM", map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false}},
		{"string first_message_index", "M_BAD_JSON", map[string]any{"first_message_index": "0", "forwarded_count": 0, "is_verified": false, "session_data": "s"}},
		{"string forwarded_count", "M_BAD_JSON", map[string]any{"first_message_index": 0, "forwarded_count": "0", "is_verified": false, "session_data": "s"}},
		{"number is_verified", "M_BAD_JSON", map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": 1, "session_data": "s"}},
	} {
		if status, res := call(t, alice, http.MethodPut, sessionURL(v), c.body); status != http.StatusBadRequest || res["errcode"] != c.errcode {
			t.Fatalf("%s: %d %v, want 400 %s", c.name, status, res, c.errcode)
		}
	}
	var spec struct {
		Version string `json:"version"`
	}
	create := map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]string{"public_key": "abc"}}
	if _, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "room_keys", "version"), create, &spec); err != nil {
		t.Fatal(err)
	}
	if status, res := call(t, alice, http.MethodPut, sessionURL(spec.Version), key(0, "a string")); status != http.StatusBadRequest || res["errcode"] != "M_BAD_JSON" {
		t.Fatalf("the spec's algorithm with a string session_data: %d %v", status, res)
	}
	if status, res := call(t, alice, http.MethodPut, sessionURL(v), key(0, "s")); status != http.StatusForbidden || res["errcode"] != "M_WRONG_ROOM_KEYS_VERSION" || res["current_version"] != spec.Version {
		t.Fatalf("a string key into the old version: %d %v", status, res)
	}
}

// DeviceListsAfterLeaving: a server that shares no room with a user of another server gets
// no updates of their device list, so it must not trust its copy. alice (A) and bob (B) share
// one room. alice leaves it, bob adds a device, alice joins again: her next /keys/query shows
// the new device. Then bob leaves, adds another device and joins again: the same.
func DeviceListsAfterLeaving(t *testing.T, urlA, nameA, urlB, nameB string) {
	ctx := context.Background()
	const wait = 60 * time.Second // includes a federation sender's backoff
	alice, bob := Register(t, urlA, "leaving-alice"), Register(t, urlB, "leaving-bob")
	uploadKeys(t, bob, test.NewDeviceKeys(t, bob.UserID.String(), bob.DeviceID.String()), 0, "b", false)
	created, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	devices := func() int {
		t.Helper()
		q, err := alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.UserID: {}}, Timeout: 10000})
		if err != nil {
			t.Fatal(err)
		}
		return len(q.DeviceKeys[bob.UserID])
	}
	addDevice := func(prefix string) {
		t.Helper()
		c := login(t, urlB, "leaving-bob")
		uploadKeys(t, c, test.NewDeviceKeys(t, bob.UserID.String(), c.DeviceID.String()), 0, prefix, false)
	}
	waitMembership := func(c *mautrix.Client, userID id.UserID, want event.Membership) {
		t.Helper()
		deadline := time.Now().Add(wait)
		for {
			var m event.MemberEventContent
			err := c.StateEvent(ctx, room, event.StateMember, userID.String(), &m)
			if err == nil && m.Membership == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's membership as %s sees it: %q %v, want %q", userID, c.UserID, m.Membership, err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ap := &Poller{C: alice}
	ap.Drain(t, func(*mautrix.RespSync) {})
	// A's syncapi applies the room's events in order: once alice's sync shows an event, the
	// leave before it has been fully handled.
	seen := func(what string, userID id.UserID, membership event.Membership) {
		t.Helper()
		ap.Until(t, wait, what, func(res *mautrix.RespSync) bool {
			joined := res.Rooms.Join[room]
			if joined == nil {
				return false
			}
			for _, e := range append(joined.State.Events, joined.Timeline.Events...) {
				var m event.MemberEventContent
				if e.Type == event.StateMember && e.GetStateKey() == userID.String() && json.Unmarshal(e.Content.VeryRaw, &m) == nil && m.Membership == membership {
					return true
				}
			}
			return false
		})
	}
	if _, err = alice.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{nameB}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	if n := devices(); n != 1 {
		t.Fatalf("bob's devices at A: %d, want 1", n)
	}

	if _, err = alice.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	waitMembership(bob, alice.UserID, event.MembershipLeave)
	addDevice("c")
	if _, err = alice.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{nameB}}); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	seen("alice's rejoin", alice.UserID, event.MembershipJoin)
	if n := devices(); n != 2 {
		t.Fatalf("bob's devices at A after alice left and joined again: %d, want 2", n)
	}

	if _, err = bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	seen("bob's leave", bob.UserID, event.MembershipLeave)
	addDevice("d")
	if _, err = bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{nameA}}); err != nil {
		t.Fatalf("bob's rejoin: %v", err)
	}
	seen("bob's rejoin", bob.UserID, event.MembershipJoin)
	if n := devices(); n != 3 {
		t.Fatalf("bob's devices at A after bob left and joined again: %d, want 3", n)
	}
}
