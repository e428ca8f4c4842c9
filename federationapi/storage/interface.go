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
	// StoreKeyResponse keeps a server's latest signed key response, replacing an older one
	// (one that was fetched earlier).
	StoreKeyResponse(ctx context.Context, r *KeyResponse) error
	// KeyResponse returns the server's latest stored key response or ErrNotFound.
	KeyResponse(ctx context.Context, serverName spec.ServerName) (*KeyResponse, error)
	// TransactionResponse returns the response stored for an origin's /send transaction or
	// ErrNotFound; StoreTransactionResponse keeps the first response stored for it.
	TransactionResponse(ctx context.Context, origin spec.ServerName, txnID string) ([]byte, error)
	StoreTransactionResponse(ctx context.Context, origin spec.ServerName, txnID string, response []byte, receivedTS spec.Timestamp) error
}
