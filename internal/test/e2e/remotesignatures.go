package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/test"
)

// SignaturesOnRemoteKeys: a user of A signs the master key of a user of B with her
// user-signing key (a verification across servers). The signature is stored at A and shown
// to her alone, as the spec's cross-signing says: her /keys/query of him carries it (and it
// verifies), her /sync lists him in device_lists.changed, another user of A does not see
// it, and neither does he at B. Signing one of his devices fails for that key.
func SignaturesOnRemoteKeys(t *testing.T, urlA, urlB string) {
	ctx := context.Background()
	alice, carol, bob := Register(t, urlA, "rsig-alice"), Register(t, urlA, "rsig-carol"), Register(t, urlB, "rsig-bob")
	aliceID, bobID := alice.UserID.String(), bob.UserID.String()
	bobDevice := test.NewDeviceKeys(t, bobID, bob.DeviceID.String())
	uploadKeys(t, bob, bobDevice, 0, "b", false)
	bobMaster := test.NewCrossSigningKey(t, bobID, "master")
	bobSelf := test.NewCrossSigningKey(t, bobID, "self_signing")
	signingUpload := func(c *mautrix.Client, body map[string]any) {
		t.Helper()
		if _, err := c.MakeRequest(ctx, http.MethodPost, c.BuildClientURL("v3", "keys", "device_signing", "upload"), body, nil); err != nil {
			t.Fatalf("cross-signing keys of %s: %v", c.UserID, err)
		}
	}
	signingUpload(bob, map[string]any{"master_key": bobMaster.JSON(t, nil), "self_signing_key": bobSelf.JSON(t, bobMaster)})
	master := test.NewCrossSigningKey(t, aliceID, "master")
	user := test.NewCrossSigningKey(t, aliceID, "user_signing")
	signingUpload(alice, map[string]any{"master_key": master.JSON(t, nil), "user_signing_key": user.JSON(t, master)})

	// alice's view of bob's keys, fetched from B.
	query := func(c *mautrix.Client, userID string) *remoteKeys {
		t.Helper()
		return queryUntil(t, c, userID, func(q *remoteKeys) bool { return q.MasterKeys[userID] != nil })
	}
	q := query(alice, bobID)
	p := &Poller{C: alice}
	p.Drain(t, func(*mautrix.RespSync) {})

	var res struct {
		Failures map[string]map[string]struct {
			Code string `json:"errcode"`
		} `json:"failures"`
	}
	sigURL := alice.BuildClientURL("v3", "keys", "signatures", "upload")
	devKeys := q.DeviceKeys[bobID][bob.DeviceID.String()]
	if _, err := alice.MakeRequest(ctx, http.MethodPost, sigURL, map[string]any{bobID: map[string]any{bob.DeviceID.String(): signedByKey(t, user, devKeys)}}, &res); err != nil ||
		res.Failures[bobID][bob.DeviceID.String()].Code != "M_INVALID_PARAM" {
		t.Fatalf("signature on a device of another user: %+v %v", res, err)
	}
	res.Failures = nil
	if _, err := alice.MakeRequest(ctx, http.MethodPost, sigURL, map[string]any{bobID: map[string]any{bobMaster.Public(): signedByKey(t, user, q.MasterKeys[bobID])}}, &res); err != nil ||
		len(res.Failures) != 0 {
		t.Fatalf("signature on bob's master key: %+v %v", res, err)
	}
	p.Until(t, 60*time.Second, "bob in alice's device_lists.changed after she signed his key", func(res *mautrix.RespSync) bool {
		return slices.Contains(res.DeviceLists.Changed, bob.UserID)
	})

	signature := func(q *remoteKeys) json.RawMessage {
		t.Helper()
		var k struct {
			Signatures map[string]map[string]json.RawMessage `json:"signatures"`
		}
		if err := json.Unmarshal(q.MasterKeys[bobID], &k); err != nil {
			t.Fatalf("bob's master key: %v", err)
		}
		return k.Signatures[aliceID]["ed25519:"+user.Public()]
	}
	q = query(alice, bobID)
	if signature(q) == nil {
		t.Fatalf("alice does not see her signature on bob's master key: %s", q.MasterKeys[bobID])
	}
	if err := gomatrixserverlib.VerifyJSON(aliceID, gomatrixserverlib.KeyID("ed25519:"+user.Public()), user.Private.Public().(ed25519.PublicKey), q.MasterKeys[bobID]); err != nil {
		t.Fatalf("alice's signature on bob's master key: %v", err)
	}
	for _, c := range []*mautrix.Client{carol, bob} {
		if s := signature(query(c, bobID)); s != nil {
			t.Fatalf("%s sees alice's signature on bob's master key", c.UserID)
		}
	}
}

// signedByKey is obj (a key object as queried) with its signatures replaced by k's, as a
// client uploads a new signature.
func signedByKey(t *testing.T, k *test.CrossSigningKey, obj json.RawMessage) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return k.Sign(t, b)
}
