package sql_test

import (
	"context"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/storage"
	fsql "github.com/matrix-org/dendrite/federationapi/storage/sql"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

type (
	lookupReq = gomatrixserverlib.PublicKeyLookupRequest
	lookupRes = gomatrixserverlib.PublicKeyLookupResult
)

func key(b byte) gomatrixserverlib.VerifyKey {
	k := make(spec.Base64Bytes, 32)
	k[0] = b
	return gomatrixserverlib.VerifyKey{Key: k}
}

// TestKeyCache stores keys and reads them back on both engines; a second Open of the same
// database (a restart) sees them; validity never shrinks and an expiry is never cleared.
func TestKeyCache(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		d, err := fsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		a1 := lookupReq{ServerName: "a.test", KeyID: "ed25519:1"}
		a2 := lookupReq{ServerName: "a.test", KeyID: "ed25519:2"}
		missing := lookupReq{ServerName: "b.test", KeyID: "ed25519:1"}
		if err = d.StoreKeys(ctx, map[lookupReq]lookupRes{
			a1: {VerifyKey: key(1), ValidUntilTS: 2000},
			a2: {VerifyKey: key(2), ExpiredTS: 500},
		}); err != nil {
			t.Fatal(err)
		}
		d, err = fsql.Open(ctx, db) // migrating again is a no-op; the rows stay
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.FetchKeys(ctx, map[lookupReq]spec.Timestamp{a1: 0, a2: 0, missing: 0})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[a1].ValidUntilTS != 2000 || got[a1].Key[0] != 1 || got[a2].ExpiredTS != 500 || got[a2].Key[0] != 2 {
			t.Fatalf("FetchKeys: %+v", got)
		}
		// A shorter validity does not replace a longer one; a current key does not clear an
		// expiry; a longer validity does replace.
		if err = d.StoreKeys(ctx, map[lookupReq]lookupRes{a1: {VerifyKey: key(1), ValidUntilTS: 1000}, a2: {VerifyKey: key(2), ValidUntilTS: 9000}}); err != nil {
			t.Fatal(err)
		}
		got, _ = d.FetchKeys(ctx, map[lookupReq]spec.Timestamp{a1: 0, a2: 0})
		if got[a1].ValidUntilTS != 2000 || got[a2].ExpiredTS != 500 {
			t.Fatalf("after weaker store: %+v", got)
		}
		if err = d.StoreKeys(ctx, map[lookupReq]lookupRes{a1: {VerifyKey: key(1), ValidUntilTS: 5000}}); err != nil {
			t.Fatal(err)
		}
		if got, _ = d.FetchKeys(ctx, map[lookupReq]spec.Timestamp{a1: 0}); got[a1].ValidUntilTS != 5000 {
			t.Fatalf("after refresh: %+v", got)
		}
	})
}

// TestKeyResponses keeps the latest response per key ID: a later response without a key
// leaves that key's response in place, an older one replaces nothing.
func TestKeyResponses(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		d, err := fsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := d.KeyResponses(ctx, "a.test", nil); err != nil || len(got) != 0 {
			t.Fatalf("nothing stored: %+v %v", got, err)
		}
		type ids = []gomatrixserverlib.KeyID
		for _, r := range []storage.KeyResponse{
			{ServerName: "a.test", KeyIDs: ids{"ed25519:1", "ed25519:2"}, Raw: []byte(`{"v":2}`), ValidUntilTS: 20, FetchedTS: 2},
			{ServerName: "a.test", KeyIDs: ids{"ed25519:1"}, Raw: []byte(`{"v":1}`), ValidUntilTS: 10, FetchedTS: 1}, // older: ignored
			{ServerName: "a.test", KeyIDs: ids{"ed25519:3"}, Raw: []byte(`{"v":3}`), ValidUntilTS: 30, FetchedTS: 3},
		} {
			if err = d.StoreKeyResponse(ctx, &r); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []struct {
			ask  ids
			want map[string]ids
		}{
			{ids{"ed25519:1"}, map[string]ids{`{"v":2}`: {"ed25519:1"}}},
			{ids{"ed25519:1", "ed25519:2", "ed25519:9"}, map[string]ids{`{"v":2}`: {"ed25519:1", "ed25519:2"}}},
			{nil, map[string]ids{`{"v":2}`: {"ed25519:1", "ed25519:2"}, `{"v":3}`: {"ed25519:3"}}},
		} {
			got, err := d.KeyResponses(ctx, "a.test", c.ask)
			if err != nil || len(got) != len(c.want) {
				t.Fatalf("KeyResponses(%v): %+v %v", c.ask, got, err)
			}
			for _, r := range got {
				if !slices.Equal(r.KeyIDs, c.want[string(r.Raw)]) || r.ServerName != "a.test" {
					t.Fatalf("KeyResponses(%v): %+v", c.ask, got)
				}
			}
		}
		got, _ := d.KeyResponses(ctx, "a.test", ids{"ed25519:3"})
		if got[0].ValidUntilTS != 30 || got[0].FetchedTS != 3 {
			t.Fatalf("timestamps: %+v", got)
		}
	})
}
