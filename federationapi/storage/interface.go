// Package storage is the federationapi's database: the cache of other servers' signing keys
// (one row per key, what gomatrixserverlib's KeyRing reads and writes) and of their signed
// key responses (what the notary endpoint serves). The SQL in storage/sql runs on SQLite and
// PostgreSQL alike.
package storage

import (
	"context"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// KeyResponse is a server's own signed answer to /_matrix/key/v2/server, as received.
type KeyResponse struct {
	ServerName spec.ServerName
	// KeyIDs are the key IDs the response is kept for: when storing, every key it publishes
	// (verify_keys and old_verify_keys); when read, those of the requested IDs it answers.
	KeyIDs []gomatrixserverlib.KeyID
	// Raw is the response JSON with the server's signature (and no notary's).
	Raw []byte
	// ValidUntilTS is the response's valid_until_ts; FetchedTS when we received it.
	ValidUntilTS spec.Timestamp
	FetchedTS    spec.Timestamp
}

// Database is what the federationapi stores. Every method is safe for concurrent use.
type Database interface {
	// KeyDatabase is the key cache of gomatrixserverlib's KeyRing. FetchKeys returns the
	// stored keys among those requested (missing ones are left out, whatever the
	// timestamps). StoreKeys never shortens a key's validity and never turns an expired
	// (old) key back into a current one, so keys stay verifiable for the events they signed.
	gomatrixserverlib.KeyDatabase
	// StoreKeyResponse keeps a server's signed key response as the latest one for each of
	// r.KeyIDs, replacing an older one (fetched earlier) per key ID. A response that no longer
	// lists a key leaves the one that did in place, so the notary never forgets a key because
	// its server did (or because someone made it answer so).
	StoreKeyResponse(ctx context.Context, r *KeyResponse) error
	// KeyResponses returns, for each of keyIDs (every key ID stored for the server when
	// keyIDs is empty), the latest stored response that publishes it; a response that answers
	// several of them is returned once. Nothing stored is an empty result, not an error.
	KeyResponses(ctx context.Context, serverName spec.ServerName, keyIDs []gomatrixserverlib.KeyID) ([]KeyResponse, error)
	// TransactionResponse returns the response stored for an origin's /send transaction or
	// ErrNotFound; StoreTransactionResponse keeps the first response stored for it.
	TransactionResponse(ctx context.Context, origin spec.ServerName, txnID string) ([]byte, error)
	StoreTransactionResponse(ctx context.Context, origin spec.ServerName, txnID string, response []byte, receivedTS spec.Timestamp) error
}
