package userapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/userapi"
	"github.com/matrix-org/dendrite/userapi/api"
)

const keyTopic = "TestOutputKeyChangeEvent"

func newKeyAPI(t testing.TB, db *sqlutil.DB) (api.ClientUserAPI, eventlog.Log) {
	t.Helper()
	log, err := eventlog.NewEmbedded(context.Background(), db, eventlog.Config{DefaultPartitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() }) // nothing to do about a failed close in cleanup
	ua, err := userapi.New(context.Background(), userapi.Deps{
		Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: serverName, DB: db, Log: log, ClientDataTopic: topic, KeyChangeTopic: keyTopic,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ua.API(), log
}

func otks(t *testing.T, d *test.DeviceKeys, n int, prefix string) map[string]json.RawMessage {
	t.Helper()
	out := map[string]json.RawMessage{}
	for i := range n {
		out[fmt.Sprintf("signed_curve25519:%s%03d", prefix, i)] = d.OneTimeKey(t, false)
	}
	return out
}

func TestKeyUploadRejectsBadKeys(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newKeyAPI(t, db)
		alice := create(t, u, "alice", "pw").UserID
		devID := "DEV"
		login(t, u, "alice", &devID)
		dev := test.NewDeviceKeys(t, alice, "DEV")
		forBob := test.NewDeviceKeys(t, "@bob:"+serverName, "DEV")
		forOtherDevice := test.NewDeviceKeys(t, alice, "OTHER")
		unsigned := json.RawMessage(`{"user_id":"` + alice + `","device_id":"DEV","algorithms":[],"keys":{"ed25519:DEV":"` + dev.Ed25519() + `"}}`)
		numericKey := json.RawMessage(`{"user_id":"` + alice + `","device_id":"DEV","algorithms":[],"keys":{"ed25519:DEV":1},"signatures":{}}`)
		for _, tc := range []struct {
			name string
			req  api.PerformUploadKeysRequest
			code string
		}{
			{"not an object", api.PerformUploadKeysRequest{DeviceKeys: json.RawMessage(`[1]`)}, "M_BAD_JSON"},
			{"without signatures", api.PerformUploadKeysRequest{DeviceKeys: unsigned}, "M_BAD_JSON"},
			{"without algorithms, keys and signatures", api.PerformUploadKeysRequest{DeviceKeys: json.RawMessage(`{"user_id":"` + alice + `","device_id":"DEV"}`)}, "M_BAD_JSON"},
			{"a key that is not a string", api.PerformUploadKeysRequest{DeviceKeys: numericKey}, "M_BAD_JSON"},
			{"another user", api.PerformUploadKeysRequest{DeviceKeys: forBob.JSON(t)}, "M_INVALID_PARAM"},
			{"another device", api.PerformUploadKeysRequest{DeviceKeys: forOtherDevice.JSON(t)}, "M_INVALID_PARAM"},
			{"bad key ID", api.PerformUploadKeysRequest{OneTimeKeys: map[string]json.RawMessage{"nocolon": json.RawMessage(`"k"`)}}, "M_INVALID_PARAM"},
			{"bad key", api.PerformUploadKeysRequest{OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:A": json.RawMessage(`[1]`)}}, "M_BAD_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.req.UserID, tc.req.DeviceID = alice, "DEV"
				_, err := u.PerformUploadKeys(ctx, &tc.req)
				wantCode(t, err, tc.code)
			})
		}
		// Nothing was stored by the refused uploads.
		q, err := u.QueryKeys(ctx, &api.QueryKeysRequest{DeviceKeys: map[string][]string{alice: nil}})
		if err != nil || len(q.DeviceKeys[alice]) != 0 {
			t.Fatalf("keys after refused uploads: %+v %v", q, err)
		}
		c, err := u.QueryOneTimeKeyCounts(ctx, &api.QueryOneTimeKeyCountsRequest{UserID: alice, DeviceID: "DEV"})
		if err != nil || len(c.OneTimeKeyCounts) != 1 || c.OneTimeKeyCounts["signed_curve25519"] != 0 || len(c.UnusedFallbackKeyAlgorithms) != 0 {
			t.Fatalf("counts after refused uploads: %+v %v", c, err)
		}
	})
}

// TestKeyUploadKeepsUnverifiedSignatures: the server does not verify self-signatures (the
// spec does not ask it to; clients do), so device keys with a placeholder ed25519 key and
// signature, and one-time keys signed by another key, are stored and served as uploaded,
// with an "unsigned" object even when the device has no display name.
func TestKeyUploadKeepsUnverifiedSignatures(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newKeyAPI(t, db)
		alice := create(t, u, "alice", "pw").UserID
		devID := "DEV"
		if _, err := u.PerformDeviceCreation(ctx, &api.PerformDeviceCreationRequest{Localpart: "alice", DeviceID: &devID}); err != nil {
			t.Fatal(err)
		}
		placeholder := `{"algorithms":["m.olm.curve25519-aes-sha256"],"device_id":"DEV","keys":{"curve25519:DEV":"curve25519+key","ed25519:DEV":"ed25519+key"},` +
			`"signatures":{"` + alice + `":{"ed25519:DEV":"self+signature"}},"user_id":"` + alice + `"}`
		otk := test.NewDeviceKeys(t, alice, "OTHER").OneTimeKey(t, false)
		res, err := u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: devID, DeviceKeys: json.RawMessage(placeholder),
			OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:A": otk, "my_algorithm:my_id_1": json.RawMessage(`"KIhHVkAQi8r41aPNql2zTqQsInpFa8XdslQLC8F8BHc"`)}})
		if err != nil || res.OneTimeKeyCounts["signed_curve25519"] != 1 || res.OneTimeKeyCounts["my_algorithm"] != 1 {
			t.Fatalf("upload: %+v %v", res, err)
		}
		q, err := u.QueryKeys(ctx, &api.QueryKeysRequest{DeviceKeys: map[string][]string{alice: {devID}}})
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Replace(placeholder, `,"user_id"`, `,"unsigned":{},"user_id"`, 1) // the stored object, keys sorted
		if got := string(q.DeviceKeys[alice][devID]); got != want {
			t.Fatalf("queried keys\n got %s\nwant %s", got, want)
		}
	})
}

// TestKeyUploadQueryAndDeletion: keys are stored, served and deleted with their device, and
// every change of a device (new, keys, name, deleted) is announced on OutputKeyChangeEvent.
func TestKeyUploadQueryAndDeletion(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, log := newKeyAPI(t, db)
		alice := create(t, u, "alice", "pw").UserID
		devID := "DEV"
		login(t, u, "alice", &devID)
		dev := test.NewDeviceKeys(t, alice, "DEV")
		keys := dev.JSON(t)
		res, err := u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: "DEV", DeviceKeys: keys,
			OneTimeKeys: otks(t, dev, 3, "a"), FallbackKeys: map[string]json.RawMessage{"signed_curve25519:F": dev.OneTimeKey(t, true)}})
		if err != nil || res.OneTimeKeyCounts["signed_curve25519"] != 3 {
			t.Fatalf("upload: %+v %v", res, err)
		}
		// The same device keys again (and a one-time key ID already held) change nothing.
		res, err = u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: "DEV", DeviceKeys: keys,
			OneTimeKeys: map[string]json.RawMessage{"signed_curve25519:a000": dev.OneTimeKey(t, false)}})
		if err != nil || res.OneTimeKeyCounts["signed_curve25519"] != 3 {
			t.Fatalf("repeated upload: %+v %v", res, err)
		}
		q, err := u.QueryKeys(ctx, &api.QueryKeysRequest{DeviceKeys: map[string][]string{alice: {}, "@nobody:" + serverName: nil, "@carol:elsewhere": nil}})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			UserID   string `json:"user_id"`
			Unsigned struct {
				Name string `json:"device_display_name"`
			} `json:"unsigned"`
		}
		if err = json.Unmarshal(q.DeviceKeys[alice]["DEV"], &got); err != nil || got.UserID != alice || got.Unsigned.Name != "phone" {
			t.Fatalf("queried keys %s: %v", q.DeviceKeys[alice]["DEV"], err)
		}
		if len(q.DeviceKeys["@nobody:"+serverName]) != 0 || q.Failures["elsewhere"] == nil {
			t.Fatalf("unknown and remote users: %+v", q)
		}
		c, err := u.QueryOneTimeKeyCounts(ctx, &api.QueryOneTimeKeyCountsRequest{UserID: alice, DeviceID: "DEV"})
		if err != nil || c.OneTimeKeyCounts["signed_curve25519"] != 3 || len(c.UnusedFallbackKeyAlgorithms) != 1 {
			t.Fatalf("counts %+v %v", c, err)
		}

		// Logging in again with the device's ID, or giving it the name it has, is no change;
		// a new name is (it is part of the device as others see it).
		login(t, u, "alice", &devID)
		for _, name := range []string{"phone", "tablet"} {
			if _, err = u.PerformDeviceUpdate(ctx, &api.PerformDeviceUpdateRequest{UserID: alice, DeviceID: "DEV", DisplayName: &name}); err != nil {
				t.Fatal(err)
			}
		}

		// Logging the device out deletes its keys and announces it.
		if _, err = u.PerformDeviceDeletion(ctx, &api.PerformDeviceDeletionRequest{UserID: alice, DeviceIDs: []string{"DEV"}}); err != nil {
			t.Fatal(err)
		}
		q, _ = u.QueryKeys(ctx, &api.QueryKeysRequest{DeviceKeys: map[string][]string{alice: nil}})
		cl, _ := u.PerformClaimKeys(ctx, &api.PerformClaimKeysRequest{OneTimeKeys: map[string]map[string]string{alice: {"DEV": "signed_curve25519"}}})
		if len(q.DeviceKeys[alice]) != 0 || len(cl.OneTimeKeys) != 0 {
			t.Fatalf("keys of a deleted device: %+v %+v", q.DeviceKeys, cl.OneTimeKeys)
		}
		// Announced: the new device, its keys, its new name, its deletion, at consecutive
		// stream IDs (a re-login or an unchanged name took none).
		recs := collectTopic(t, log, keyTopic, 4)
		want := []api.DeviceKeyChange{
			{UserID: alice, DeviceID: "DEV", StreamID: 1, DisplayName: "phone"},
			{UserID: alice, DeviceID: "DEV", StreamID: 2, DisplayName: "phone", Keys: keys},
			{UserID: alice, DeviceID: "DEV", StreamID: 3, DisplayName: "tablet", Keys: keys},
			{UserID: alice, DeviceID: "DEV", StreamID: 4, Deleted: true},
		}
		for i, rec := range recs[:4] {
			var ev api.OutputKeyChangeEvent
			if err = json.Unmarshal(rec.Value, &ev); err != nil || string(rec.Key) != alice || ev.Type != api.OutputKeyChangeTypeDeviceKeys || ev.DeviceKeys == nil {
				t.Fatalf("key change %d: %s %s %v", i, rec.Key, rec.Value, err)
			}
			got, w := *ev.DeviceKeys, want[i]
			if got.UserID != w.UserID || got.DeviceID != w.DeviceID || got.StreamID != w.StreamID || got.DisplayName != w.DisplayName ||
				got.Deleted != w.Deleted || !bytes.Equal(got.Keys, w.Keys) {
				t.Fatalf("key change %d: %+v, want %+v", i, got, w)
			}
		}
	})
}

// TestConcurrentClaims is the concurrency story: 50 claims at once of one device's 20
// one-time keys hand out each key once, and the fallback key to the other 30.
func TestConcurrentClaims(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newKeyAPI(t, db)
		alice := create(t, u, "alice", "pw").UserID
		devID := "DEV"
		login(t, u, "alice", &devID)
		dev := test.NewDeviceKeys(t, alice, "DEV")
		_, err := u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: "DEV", DeviceKeys: dev.JSON(t),
			OneTimeKeys: otks(t, dev, 20, "k"), FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB": dev.OneTimeKey(t, true)}})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := u.PerformClaimKeys(ctx, &api.PerformClaimKeysRequest{OneTimeKeys: map[string]map[string]string{alice: {"DEV": "signed_curve25519"}}})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for id := range res.OneTimeKeys[alice]["DEV"] {
					got[id]++
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(got) != 21 || got["signed_curve25519:FB"] != 30 {
			t.Fatalf("claimed %d distinct keys, the fallback key %d times: %v", len(got), got["signed_curve25519:FB"], got)
		}
		for id, n := range got {
			if id != "signed_curve25519:FB" && n != 1 {
				t.Fatalf("key %s handed out %d times", id, n)
			}
		}
		c, err := u.QueryOneTimeKeyCounts(ctx, &api.QueryOneTimeKeyCountsRequest{UserID: alice, DeviceID: "DEV"})
		if err != nil || c.OneTimeKeyCounts["signed_curve25519"] != 0 || len(c.UnusedFallbackKeyAlgorithms) != 0 {
			t.Fatalf("counts after the claims: %+v %v", c, err)
		}
		// A new fallback key is unused again.
		_, err = u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: "DEV",
			FallbackKeys: map[string]json.RawMessage{"signed_curve25519:FB2": dev.OneTimeKey(t, true)}})
		c, _ = u.QueryOneTimeKeyCounts(ctx, &api.QueryOneTimeKeyCountsRequest{UserID: alice, DeviceID: "DEV"})
		if err != nil || len(c.UnusedFallbackKeyAlgorithms) != 1 {
			t.Fatalf("new fallback key: %+v %v", c, err)
		}
	})
}

// TestRemoteDeviceListUpdates feeds other servers' EDUs through InputDeviceListUpdate: each
// becomes an OutputKeyChangeEvent of the remote user with a growing stream ID, numbered in
// its partition, and a redelivered device list update (same stream ID) announces nothing:
// its announcement was stored in the outbox with the change, so a crash between the
// cache's commit and the produce loses nothing either.
func TestRemoteDeviceListUpdates(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// The log has a database of its own, as in the monolith: the consumer produces from
		// inside its transaction, which on one SQLite database would wait for itself.
		logDB, err := sqlutil.Open("file:" + t.TempDir() + "/log.db")
		if err != nil {
			t.Fatal(err)
		}
		log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = log.Close()   // nothing to do about a failed close in cleanup
			_ = logDB.Close() // likewise
		})
		ua, err := userapi.New(ctx, userapi.Deps{Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: serverName, DB: db, Log: log,
			KeyChangeTopic: keyTopic, DeviceListTopic: "devicelists"})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- ua.Run(ctx) }()
		p := &api.DeviceListProducer{Log: log, Topic: "devicelists"}
		carol := "@carol:remote.example"
		update := &api.InputDeviceListUpdate{Origin: "remote.example", UserID: carol,
			DeviceList: &api.DeviceListUpdate{UserID: carol, DeviceID: "C1", StreamID: 7, Keys: json.RawMessage(`{}`)}}
		signing := &api.InputDeviceListUpdate{Origin: "remote.example", UserID: carol, SigningKeys: json.RawMessage(`{"user_id":"` + carol + `","master_key":{}}`)}
		for _, in := range []*api.InputDeviceListUpdate{update, update, signing} {
			if err = p.InputDeviceListUpdate(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		// The signing key update is the marker: the redelivered update, applied before it,
		// announces nothing (its announcement was stored with it the first time).
		recs := collectTopic(t, log, keyTopic, 2)
		cancel()
		if err = <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		var first, second api.OutputKeyChangeEvent
		_ = json.Unmarshal(recs[0].Value, &first) // checked field by field below
		_ = json.Unmarshal(recs[1].Value, &second)
		if first.DeviceKeys == nil || first.DeviceKeys.UserID != carol || first.DeviceKeys.StreamID != 1 || first.Seq != 1 ||
			second.CrossSigning == nil || second.CrossSigning.StreamID != 2 || second.Seq != 2 {
			t.Fatalf("announcements %s / %s", recs[0].Value, recs[1].Value)
		}
	})
}
