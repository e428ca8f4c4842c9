package userapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/userapi/api"
)

// benchEngines runs fn as the sub-benchmarks "sqlite" and "postgres", each on a fresh database.
func benchEngines(b *testing.B, fn func(b *testing.B, u api.ClientUserAPI)) {
	for _, engine := range []string{"sqlite", "postgres"} {
		b.Run(engine, func(b *testing.B) {
			dsn := "file:" + filepath.Join(b.TempDir(), "bench.db")
			if engine == "postgres" {
				dsn = test.PostgresDSN(b)
			}
			db, err := sqlutil.Open(dsn)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
			u, _ := newKeyAPI(b, db)
			fn(b, u)
		})
	}
}

// benchUsers creates n users with two devices each, every device with uploaded device keys.
func benchUsers(b *testing.B, u api.ClientUserAPI, n int) map[string][]string {
	b.Helper()
	ctx := context.Background()
	users := map[string][]string{}
	for i := range n {
		local := fmt.Sprintf("user%d", i)
		userID := create(b, u, local, "pw").UserID
		for _, dev := range []string{"A", "B"} {
			devID := dev
			if _, err := u.PerformDeviceCreation(ctx, &api.PerformDeviceCreationRequest{Localpart: local, DeviceID: &devID}); err != nil {
				b.Fatal(err)
			}
			if _, err := u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: userID, DeviceID: devID,
				DeviceKeys: test.NewDeviceKeys(b, userID, devID).JSON(b)}); err != nil {
				b.Fatal(err)
			}
		}
		users[userID] = nil
	}
	return users
}

// BenchmarkQueryKeys is POST /keys/query's local part (userapi.QueryKeys): one query for
// 100 local users with 2 devices each. It reports devices answered per second.
func BenchmarkQueryKeys(b *testing.B) {
	benchEngines(b, func(b *testing.B, u api.ClientUserAPI) {
		users := benchUsers(b, u, 100)
		ctx := context.Background()
		b.ResetTimer()
		for b.Loop() {
			res, err := u.QueryKeys(ctx, &api.QueryKeysRequest{UserID: "@user0:" + serverName, DeviceKeys: users})
			if err != nil || len(res.DeviceKeys) != 100 {
				b.Fatalf("query: %d users, %v", len(res.DeviceKeys), err)
			}
		}
		b.ReportMetric(float64(200*b.N)/b.Elapsed().Seconds(), "devices/s")
	})
}

// BenchmarkClaimKeys is POST /keys/claim's local part (userapi.PerformClaimKeys): one
// one-time key of one device per claim, from a store of b.N keys uploaded beforehand.
func BenchmarkClaimKeys(b *testing.B) {
	benchEngines(b, func(b *testing.B, u api.ClientUserAPI) {
		ctx := context.Background()
		alice := create(b, u, "alice", "pw").UserID
		devID := "DEV"
		if _, err := u.PerformDeviceCreation(ctx, &api.PerformDeviceCreationRequest{Localpart: "alice", DeviceID: &devID}); err != nil {
			b.Fatal(err)
		}
		dk := test.NewDeviceKeys(b, alice, devID)
		for uploaded := 0; uploaded < b.N; uploaded += 1000 {
			keys := map[string]json.RawMessage{}
			for i := uploaded; i < uploaded+1000; i++ {
				keys[fmt.Sprintf("signed_curve25519:%08d", i)] = dk.OneTimeKey(b, false)
			}
			if _, err := u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: devID, OneTimeKeys: keys}); err != nil {
				b.Fatal(err)
			}
		}
		req := &api.PerformClaimKeysRequest{OneTimeKeys: map[string]map[string]string{alice: {devID: "signed_curve25519"}}}
		b.ResetTimer()
		for range b.N {
			res, err := u.PerformClaimKeys(ctx, req)
			if err != nil || len(res.OneTimeKeys[alice][devID]) != 1 {
				b.Fatalf("claim: %+v %v", res, err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	})
}

// BenchmarkClaimKeysManyDevices is one POST /keys/claim for 40 devices (20 users with 2
// devices each), as a client sharing a Megolm session with a room does: one one-time key
// per device, from stores of b.N keys per device uploaded beforehand.
func BenchmarkClaimKeysManyDevices(b *testing.B) {
	benchEngines(b, func(b *testing.B, u api.ClientUserAPI) {
		ctx := context.Background()
		req := &api.PerformClaimKeysRequest{OneTimeKeys: map[string]map[string]string{}}
		for i := range 20 {
			name := fmt.Sprintf("user%02d", i)
			userID := create(b, u, name, "pw").UserID
			req.OneTimeKeys[userID] = map[string]string{}
			for _, devID := range []string{"D1", "D2"} {
				if _, err := u.PerformDeviceCreation(ctx, &api.PerformDeviceCreationRequest{Localpart: name, DeviceID: &devID}); err != nil {
					b.Fatal(err)
				}
				dk := test.NewDeviceKeys(b, userID, devID)
				keys := map[string]json.RawMessage{}
				for k := range b.N {
					keys[fmt.Sprintf("signed_curve25519:%08d", k)] = dk.OneTimeKey(b, false)
				}
				for len(keys) > 0 {
					batch := map[string]json.RawMessage{}
					for id, k := range keys {
						batch[id] = k
						delete(keys, id)
						if len(batch) == 1000 {
							break
						}
					}
					if _, err := u.PerformUploadKeys(ctx, &api.PerformUploadKeysRequest{UserID: userID, DeviceID: devID, OneTimeKeys: batch}); err != nil {
						b.Fatal(err)
					}
				}
				req.OneTimeKeys[userID][devID] = "signed_curve25519"
			}
		}
		b.ResetTimer()
		for range b.N {
			res, err := u.PerformClaimKeys(ctx, req)
			if err != nil || len(res.OneTimeKeys) != 20 {
				b.Fatalf("claim: %d users %v", len(res.OneTimeKeys), err)
			}
		}
		b.ReportMetric(float64(40*b.N)/b.Elapsed().Seconds(), "claims/s")
	})
}
