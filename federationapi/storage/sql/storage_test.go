package sql_test

import (
	"context"
	"errors"
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

// TestKeyResponses keeps the latest response per server.
func TestKeyResponses(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		d, err := fsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = d.KeyResponse(ctx, "a.test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("want ErrNotFound, got %v", err)
		}
		for _, r := range []storage.KeyResponse{
			{ServerName: "a.test", Raw: []byte(`{"v":2}`), ValidUntilTS: 20, FetchedTS: 2},
			{ServerName: "a.test", Raw: []byte(`{"v":1}`), ValidUntilTS: 10, FetchedTS: 1}, // older: ignored
		} {
			if err = d.StoreKeyResponse(ctx, &r); err != nil {
				t.Fatal(err)
			}
		}
		got, err := d.KeyResponse(ctx, "a.test")
		if err != nil || string(got.Raw) != `{"v":2}` || got.ValidUntilTS != 20 || got.FetchedTS != 2 {
			t.Fatalf("KeyResponse: %+v %v", got, err)
		}
	})
}
