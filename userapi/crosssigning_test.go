package userapi_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/userapi/api"
)

// signedBy returns obj signed by k instead of its own signatures (what a client sends to
// /keys/signatures/upload: the stored key plus its new signature).
func signedBy(t *testing.T, k *test.CrossSigningKey, obj json.RawMessage) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	b, _ := json.Marshal(m) // plain data
	return k.Sign(t, b)
}

func TestCrossSigning(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, log := newKeyAPI(t, db)
		alice, bob := create(t, u, "alice", "pw").UserID, create(t, u, "bob", "pw").UserID
		devID := "DEV"
		login(t, u, "alice", &devID)
		dev := test.NewDeviceKeys(t, alice, devID)
		if _, err := u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: devID, DeviceKeys: dev.JSON(t)}); err != nil {
			t.Fatal(err)
		}
		master := test.NewCrossSigningKey(t, alice, "master")
		self := test.NewCrossSigningKey(t, alice, "self_signing")
		user := test.NewCrossSigningKey(t, alice, "user_signing")
		stranger := test.NewCrossSigningKey(t, alice, "master")

		_, err := u.PerformUploadDeviceSigningKeys(ctx, &api.PerformUploadDeviceSigningKeysRequest{UserID: alice, SelfSigningKey: self.JSON(t, master)})
		wantCode(t, err, "M_MISSING_PARAM")
		_, err = u.PerformUploadDeviceSigningKeys(ctx, &api.PerformUploadDeviceSigningKeysRequest{UserID: alice,
			MasterKey: master.JSON(t, nil), UserSigningKey: user.JSON(t, stranger)})
		wantCode(t, err, "M_INVALID_SIGNATURE")
		_, err = u.PerformUploadDeviceSigningKeys(ctx, &api.PerformUploadDeviceSigningKeysRequest{UserID: alice,
			MasterKey: test.NewCrossSigningKey(t, bob, "master").JSON(t, nil)})
		wantCode(t, err, "M_INVALID_PARAM")
		up := &api.PerformUploadDeviceSigningKeysRequest{UserID: alice, MasterKey: master.JSON(t, nil),
			SelfSigningKey: self.JSON(t, master), UserSigningKey: user.JSON(t, master)}
		if _, err = u.PerformUploadDeviceSigningKeys(ctx, up); err != nil {
			t.Fatalf("first upload without authentication: %v", err)
		}
		if _, err = u.PerformUploadDeviceSigningKeys(ctx, up); err != nil {
			t.Fatalf("identical upload without authentication: %v", err)
		}
		newMaster := &api.PerformUploadDeviceSigningKeysRequest{UserID: alice, MasterKey: stranger.JSON(t, nil)}
		_, err = u.PerformUploadDeviceSigningKeys(ctx, newMaster)
		wantCode(t, err, "M_UNAUTHORIZED")

		q, err := u.QueryKeys(ctx, &api.QueryKeysRequest{UserID: bob, DeviceKeys: map[string][]string{alice: nil}})
		if err != nil || q.MasterKeys[alice] == nil || q.SelfSigningKeys[alice] == nil || q.UserSigningKeys[alice] != nil {
			t.Fatalf("bob's view of alice's cross-signing keys: %+v %v", q, err)
		}
		own, _ := u.QueryKeys(ctx, &api.QueryKeysRequest{UserID: alice, DeviceKeys: map[string][]string{alice: nil}})
		if own.UserSigningKeys[alice] == nil {
			t.Fatalf("alice does not see her user-signing key: %+v", own)
		}

		// alice signs her device with her self-signing key; a signature by another key fails.
		devKeys := q.DeviceKeys[alice][devID]
		res, err := u.PerformUploadSignatures(ctx, &api.PerformUploadSignaturesRequest{UserID: alice,
			Signatures: map[string]map[string]json.RawMessage{alice: {devID: signedBy(t, self, devKeys)}}})
		if err != nil || len(res.Failures) != 0 {
			t.Fatalf("device signature: %+v %v", res, err)
		}
		forged := test.NewCrossSigningKey(t, alice, "self_signing")
		res, _ = u.PerformUploadSignatures(ctx, &api.PerformUploadSignaturesRequest{UserID: alice,
			Signatures: map[string]map[string]json.RawMessage{alice: {devID: signedBy(t, forged, devKeys)}, bob: {"nokey": json.RawMessage(`{}`)}}})
		if len(res.Failures[alice]) != 1 || len(res.Failures[bob]) != 1 {
			t.Fatalf("forged signature and unknown key: %+v", res.Failures)
		}
		q, _ = u.QueryKeys(ctx, &api.QueryKeysRequest{UserID: bob, DeviceKeys: map[string][]string{alice: nil}})
		var signed struct {
			Signatures map[string]map[string]string `json:"signatures"`
		}
		if json.Unmarshal(q.DeviceKeys[alice][devID], &signed) != nil || signed.Signatures[alice]["ed25519:"+self.Public()] == "" ||
			signed.Signatures[alice]["ed25519:"+forged.Public()] != "" {
			t.Fatalf("alice's device keys as bob sees them: %s", q.DeviceKeys[alice][devID])
		}

		// bob's master key signed by alice's user-signing key: alice sees it, carol does not.
		bobMaster := test.NewCrossSigningKey(t, bob, "master")
		if _, err = u.PerformUploadDeviceSigningKeys(ctx, &api.PerformUploadDeviceSigningKeysRequest{UserID: bob, MasterKey: bobMaster.JSON(t, nil)}); err != nil {
			t.Fatal(err)
		}
		res, err = u.PerformUploadSignatures(ctx, &api.PerformUploadSignaturesRequest{UserID: alice,
			Signatures: map[string]map[string]json.RawMessage{bob: {bobMaster.Public(): signedBy(t, user, bobMaster.JSON(t, nil))}}})
		if err != nil || len(res.Failures) != 0 {
			t.Fatalf("signature of bob's master key: %+v %v", res, err)
		}
		for viewer, want := range map[string]bool{alice: true, "@carol:" + serverName: false} {
			q, _ = u.QueryKeys(ctx, &api.QueryKeysRequest{UserID: viewer, DeviceKeys: map[string][]string{bob: nil}})
			signed.Signatures = nil
			if json.Unmarshal(q.MasterKeys[bob], &signed) != nil || (signed.Signatures[alice] != nil) != want {
				t.Fatalf("bob's master key as %s sees it: %s", viewer, q.MasterKeys[bob])
			}
		}

		// With authentication the master key can be replaced, and the user-signing key alone.
		newMaster.Authenticated = true
		if _, err = u.PerformUploadDeviceSigningKeys(ctx, newMaster); err != nil {
			t.Fatalf("authenticated replacement: %v", err)
		}
		newUser := &api.PerformUploadDeviceSigningKeysRequest{UserID: alice, UserSigningKey: test.NewCrossSigningKey(t, alice, "user_signing").JSON(t, stranger),
			Authenticated: true}
		if _, err = u.PerformUploadDeviceSigningKeys(ctx, newUser); err != nil {
			t.Fatalf("new user-signing key: %v", err)
		}

		// Every change was announced; those only one user may see (the signature on bob's
		// key, the user-signing key) name that user in notify_only.
		var kinds []string
		for _, rec := range collectTopic(t, log, keyTopic, 8) {
			var ev api.OutputKeyChangeEvent
			_ = json.Unmarshal(rec.Value, &ev) // checked below
			kind := string(rec.Key) + " " + ev.Type
			if c := ev.CrossSigning; c != nil {
				kind += " of " + c.UserID + " for " + c.NotifyOnly
			}
			kinds = append(kinds, kind)
		}
		cs := alice + " cross_signing of " + alice + " for "
		want := []string{alice + " device_keys", alice + " device_keys", cs, cs, bob + " cross_signing of " + bob + " for ",
			alice + " cross_signing of " + bob + " for " + alice, cs, cs + alice}
		if !slices.Equal(kinds[:8], want) {
			t.Fatalf("key changes\n%q\nwant\n%q", kinds, want)
		}
	})
}
