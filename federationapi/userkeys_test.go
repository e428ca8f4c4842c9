package federationapi_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/test"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// TestRemoteKeys: A asks B for its user's keys (/user/keys/claim, /user/devices) and gets
// them. (A's checks of what other servers' /user/devices answer are the userapi's
// TestRemoteDeviceListCache.)
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
		cl, err := a.fed.API().ClaimRemoteKeys(ctx, &api.ClaimRemoteKeysRequest{Server: string(b.name),
			OneTimeKeys: map[string]map[string]string{bob: {devID: "signed_curve25519"}}})
		if err != nil || cl.OneTimeKeys[bob][devID]["signed_curve25519:A"] == nil {
			t.Fatalf("bob's one-time key from B: %+v %v", cl, err)
		}
		devs, err := a.client.GetUserDevices(ctx, a.name, b.name, bob)
		if err != nil || devs.StreamID < 1 || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != devID {
			t.Fatalf("bob's devices from B: %+v %v", devs, err)
		}

	})
}
