// Package api is the federationapi's contract with other components: the key ring that
// verifies other servers' signatures (their signing keys, fetched and cached by the
// federationapi), usable in any process through KeyRing.
package api

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// QueryPublicKeysRequest asks for servers' signing keys. The timestamp of each (server, key
// ID) is when the key must be valid; as in gomatrixserverlib.KeyFetcher.
type QueryPublicKeysRequest struct {
	Requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp `json:"requests"`
}

// QueryPublicKeysResponse holds the keys found. Keys that could not be found are missing;
// that is not an error.
type QueryPublicKeysResponse struct {
	Results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult `json:"results"`
}

// KeyAPI is what components that verify signatures (the roomserver, federationsender) use.
type KeyAPI interface {
	// QueryPublicKeys returns cached keys, first fetching those missing or past their
	// valid_until_ts from the servers themselves (then from the configured notaries) and
	// caching what it fetched. It has no other side effect.
	QueryPublicKeys(ctx context.Context, req *QueryPublicKeysRequest) (*QueryPublicKeysResponse, error)
}

// KeyRing is a gomatrixserverlib.JSONVerifier over a KeyAPI (direct or over internal HTTP):
// every key lookup goes to the federationapi, which fetches and caches.
func KeyRing(a KeyAPI) gomatrixserverlib.JSONVerifier {
	return &gomatrixserverlib.KeyRing{KeyDatabase: keyDatabase{a: a}}
}

// keyDatabase is the KeyRing's database: the federationapi's cache, which already stores
// what it fetched, so StoreKeys has nothing to do.
type keyDatabase struct {
	a KeyAPI
}

func (k keyDatabase) FetcherName() string {
	return "federationapi"
}

func (k keyDatabase) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	res, err := k.a.QueryPublicKeys(ctx, &QueryPublicKeysRequest{Requests: requests})
	if err != nil {
		return nil, err
	}
	return res.Results, nil
}

func (k keyDatabase) StoreKeys(context.Context, map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	return nil
}
