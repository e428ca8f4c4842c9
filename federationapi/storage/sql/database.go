package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/storage"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// Database is the SQL federationapi store.
type Database struct {
	db *sqlutil.DB
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "federationapi", migrations); err != nil {
		return nil, fmt.Errorf("migrate federationapi schema: %w", err)
	}
	return &Database{db: db}, nil
}

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (d *Database) FetcherName() string {
	return "federationapi key cache"
}

const selectKeySQL = "SELECT public_key, valid_until_ts, expired_ts FROM federationapi_server_keys WHERE server_name = $1 AND key_id = $2"

// FetchKeys implements gomatrixserverlib.KeyFetcher: the stored keys among those requested.
func (d *Database) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := make(map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, len(requests))
	for req := range requests {
		var key string
		var res gomatrixserverlib.PublicKeyLookupResult
		err := d.db.QueryRowContext(ctx, selectKeySQL, string(req.ServerName), string(req.KeyID)).Scan(&key, &res.ValidUntilTS, &res.ExpiredTS)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("select key %s of %s: %w", req.KeyID, req.ServerName, err)
		}
		if err = res.Key.Decode(key); err != nil {
			return nil, fmt.Errorf("stored key %s of %s: %w", req.KeyID, req.ServerName, err)
		}
		out[req] = res
	}
	return out, nil
}

// upsertKeySQL keeps the longest validity seen and never clears an expiry.
const upsertKeySQL = `INSERT INTO federationapi_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (server_name, key_id) DO UPDATE SET
	public_key = excluded.public_key,
	valid_until_ts = CASE WHEN excluded.valid_until_ts > federationapi_server_keys.valid_until_ts
		THEN excluded.valid_until_ts ELSE federationapi_server_keys.valid_until_ts END,
	expired_ts = CASE WHEN excluded.expired_ts <> 0 THEN excluded.expired_ts ELSE federationapi_server_keys.expired_ts END`

// StoreKeys implements gomatrixserverlib.KeyDatabase.
func (d *Database) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	if len(results) == 0 {
		return nil
	}
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for req, res := range results {
			if _, err := tx.ExecContext(ctx, upsertKeySQL, string(req.ServerName), string(req.KeyID), res.Key.Encode(),
				int64(res.ValidUntilTS), int64(res.ExpiredTS)); err != nil {
				return fmt.Errorf("store key %s of %s: %w", req.KeyID, req.ServerName, err)
			}
		}
		return nil
	})
}

// upsertKeyResponseSQL replaces a key ID's response only with one fetched no earlier.
const upsertKeyResponseSQL = `INSERT INTO federationapi_notary_responses (server_name, key_id, response, valid_until_ts, fetched_ts)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (server_name, key_id) DO UPDATE SET response = excluded.response, valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts
WHERE excluded.fetched_ts >= federationapi_notary_responses.fetched_ts`

// StoreKeyResponse implements storage.Database.
func (d *Database) StoreKeyResponse(ctx context.Context, r *storage.KeyResponse) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for _, id := range r.KeyIDs {
			if _, err := tx.ExecContext(ctx, upsertKeyResponseSQL, string(r.ServerName), string(id), string(r.Raw),
				int64(r.ValidUntilTS), int64(r.FetchedTS)); err != nil {
				return fmt.Errorf("store key response of %s for %s: %w", r.ServerName, id, err)
			}
		}
		return nil
	})
}

const selectKeyResponsesSQL = "SELECT key_id, response, valid_until_ts, fetched_ts FROM federationapi_notary_responses WHERE server_name = $1 ORDER BY key_id"

// KeyResponses implements storage.Database. A server publishes a handful of keys, so its
// rows are read at once and filtered here.
func (d *Database) KeyResponses(ctx context.Context, serverName spec.ServerName, keyIDs []gomatrixserverlib.KeyID) ([]storage.KeyResponse, error) {
	rows, err := d.db.QueryContext(ctx, selectKeyResponsesSQL, string(serverName))
	if err != nil {
		return nil, fmt.Errorf("select key responses of %s: %w", serverName, err)
	}
	defer rows.Close() // nolint: errcheck // read-only; rows.Err reports failures
	wanted := map[gomatrixserverlib.KeyID]bool{}
	for _, id := range keyIDs {
		wanted[id] = true
	}
	var out []storage.KeyResponse
	byRaw := map[string]int{}
	for rows.Next() {
		var id, raw string
		var validUntil, fetched spec.Timestamp
		if err = rows.Scan(&id, &raw, &validUntil, &fetched); err != nil {
			return nil, fmt.Errorf("scan key response of %s: %w", serverName, err)
		}
		if len(wanted) > 0 && !wanted[gomatrixserverlib.KeyID(id)] {
			continue
		}
		i, seen := byRaw[raw]
		if !seen {
			i = len(out)
			byRaw[raw] = i
			out = append(out, storage.KeyResponse{ServerName: serverName, Raw: []byte(raw), ValidUntilTS: validUntil, FetchedTS: fetched})
		}
		out[i].KeyIDs = append(out[i].KeyIDs, gomatrixserverlib.KeyID(id))
	}
	if err = rows.Err(); err != nil {
		return nil, fmt.Errorf("read key responses of %s: %w", serverName, err)
	}
	return out, nil
}

// TransactionResponse implements storage.Database.
func (d *Database) TransactionResponse(ctx context.Context, origin spec.ServerName, txnID string) ([]byte, error) {
	var raw string
	err := d.db.QueryRowContext(ctx, "SELECT response FROM federationapi_transactions WHERE origin = $1 AND txn_id = $2", string(origin), txnID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select transaction %s of %s: %w", txnID, origin, err)
	}
	return []byte(raw), nil
}

// StoreTransactionResponse implements storage.Database.
func (d *Database) StoreTransactionResponse(ctx context.Context, origin spec.ServerName, txnID string, response []byte, receivedTS spec.Timestamp) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO federationapi_transactions (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (origin, txn_id) DO NOTHING`, string(origin), txnID, string(response), int64(receivedTS))
		return err
	})
}
