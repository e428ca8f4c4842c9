package federationapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/test"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// TestRemoteKeys: A asks B for its user's keys (/user/keys/query, /user/keys/claim,
// /user/devices) and gets them; then B is replaced by a server answering with keys of another
// device and keys of a user of a third server, which A drops, and placeholder keys whose
// signature does not verify, which A keeps (clients verify signatures, servers do not).
func TestRemoteKeys(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		bob := b.createUser(t, "bob")
		devID := "BOBDEV"
		if _, err := b.users.PerformDeviceCreation(ctx, &uapi.PerformDeviceCreationRequest{Localpart: "bob", DeviceID: &devID}); err != nil {
			t.Fatal(err)
		}
		dk := test.NewDeviceKeys(t, bob, devID)
		if _, err := b.users.PerformUploadKeys(ctx, &uapi.PerformUploadKeysRequest{UserID: bob, DeviceID: devID, DeviceKeys: dk.JSON(t),
			OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:A": dk.OneTimeKey(t, false)}}); err != nil {
			t.Fatal(err)
		}
		q, err := a.fed.API().QueryRemoteKeys(ctx, &api.QueryRemoteKeysRequest{Server: string(b.name), DeviceKeys: map[string][]string{bob: nil}})
		if err != nil || q.DeviceKeys[bob][devID] == nil {
			t.Fatalf("bob's keys from B: %+v %v", q, err)
		}
		cl, err := a.fed.API().ClaimRemoteKeys(ctx, &api.ClaimRemoteKeysRequest{Server: string(b.name),
			OneTimeKeys: map[string]map[string]string{bob: {devID: "signed_curve25519"}}})
		if err != nil || cl.OneTimeKeys[bob][devID]["signed_curve25519:A"] == nil {
			t.Fatalf("bob's one-time key from B: %+v %v", cl, err)
		}
		devs, err := a.client.GetUserDevices(ctx, a.name, b.name, bob)
		if err != nil || devs.StreamID < 1 || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != devID {
			t.Fatalf("bob's devices from B: %+v %v", devs, err)
		}

		// Servers do not verify device self-signatures (clients do): a placeholder key is kept,
		// keys filed under a device they do not name and keys of another server's user are not.
		placeholder := json.RawMessage(`{"user_id":"` + bob + `","device_id":"FAKE","algorithms":["m.olm.v1.curve25519-aes-sha2"],` +
			`"keys":{"ed25519:FAKE":"ed25519+key"},"signatures":{"` + bob + `":{"ed25519:FAKE":"self+signature"}}}`)
		eve := "@eve:third.example"
		var lying http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"device_keys": map[string]any{ // a test server's answer
				bob: map[string]any{devID: test.NewDeviceKeys(t, bob, "OTHER").JSON(t), "FAKE": placeholder},
				eve: map[string]any{"EVE": test.NewDeviceKeys(t, eve, "EVE").JSON(t)},
			}})
		})
		b.handler.Store(&lying)
		q, err = a.fed.API().QueryRemoteKeys(ctx, &api.QueryRemoteKeysRequest{Server: string(b.name), DeviceKeys: map[string][]string{bob: nil}})
		if err != nil || len(q.DeviceKeys[bob]) != 1 || q.DeviceKeys[bob]["FAKE"] == nil || q.DeviceKeys[eve] != nil {
			t.Fatalf("a lying server's keys: %+v %v", q, err)
		}
	})
}
