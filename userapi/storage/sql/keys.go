package sql

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// bumpStreamSQL advances an account's device-list stream ID and returns the new one.
const bumpStreamSQL = "INSERT INTO userapi_device_list_streams (localpart, stream_id) VALUES ($1, 1)" +
	" ON CONFLICT (localpart) DO UPDATE SET stream_id = userapi_device_list_streams.stream_id + 1 RETURNING stream_id"

const upsertDeviceKeysSQL = "INSERT INTO userapi_device_keys (localpart, device_id, key_json) VALUES ($1, $2, $3)" +
	" ON CONFLICT (localpart, device_id) DO UPDATE SET key_json = excluded.key_json"

const insertOneTimeKeySQL = "INSERT INTO userapi_one_time_keys (localpart, device_id, algorithm, key_id, key_json)" +
	" VALUES ($1, $2, $3, $4, $5) ON CONFLICT (localpart, device_id, key_id) DO NOTHING"

const upsertFallbackKeySQL = "INSERT INTO userapi_fallback_keys (localpart, device_id, algorithm, key_id, key_json, used)" +
	" VALUES ($1, $2, $3, $4, $5, FALSE) ON CONFLICT (localpart, device_id, algorithm) DO UPDATE SET" +
	" key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE"

func bumpStream(ctx context.Context, tx *sql.Tx, localpart string) (int64, error) {
	var id int64
	if err := tx.QueryRowContext(ctx, bumpStreamSQL, localpart).Scan(&id); err != nil {
		return 0, fmt.Errorf("advance device list stream: %w", err)
	}
	return id, nil
}

// UploadKeys implements storage.Database.
func (d *Database) UploadKeys(ctx context.Context, up *storage.KeyUpload, ann storage.Announcement[*storage.KeyChange]) (*storage.KeyChange, map[string]int, error) {
	var change *storage.KeyChange
	var counts map[string]int
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if up.DeviceKeys != nil {
			old, err := deviceKeyJSON(ctx, tx, up.Localpart, up.DeviceID)
			if err != nil {
				return err
			}
			if !bytes.Equal(old, up.DeviceKeys) {
				if _, err = tx.ExecContext(ctx, upsertDeviceKeysSQL, up.Localpart, up.DeviceID, string(up.DeviceKeys)); err != nil {
					return err
				}
				var name string
				err = tx.QueryRowContext(ctx, "SELECT display_name FROM userapi_devices WHERE localpart = $1 AND device_id = $2",
					up.Localpart, up.DeviceID).Scan(&name)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				id, err := bumpStream(ctx, tx, up.Localpart)
				if err != nil {
					return err
				}
				change = &storage.KeyChange{DeviceID: up.DeviceID, StreamID: id, JSON: up.DeviceKeys, DisplayName: name}
				if err = insertAnnounced(ctx, tx, ann, change); err != nil {
					return err
				}
			}
		}
		for _, k := range up.OneTimeKeys {
			if _, err := tx.ExecContext(ctx, insertOneTimeKeySQL, up.Localpart, up.DeviceID, k.Algorithm, k.KeyID, string(k.JSON)); err != nil {
				return err
			}
		}
		for _, k := range up.FallbackKeys {
			if _, err := tx.ExecContext(ctx, upsertFallbackKeySQL, up.Localpart, up.DeviceID, k.Algorithm, k.KeyID, string(k.JSON)); err != nil {
				return err
			}
		}
		var err error
		counts, err = oneTimeKeyCounts(ctx, tx, up.Localpart, up.DeviceID)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store keys: %w", err)
	}
	return change, counts, nil
}

// deviceKeyJSON is a device's stored device keys, nil when it has none.
func deviceKeyJSON(ctx context.Context, tx *sql.Tx, localpart, deviceID string) ([]byte, error) {
	var js string
	err := tx.QueryRowContext(ctx, "SELECT key_json FROM userapi_device_keys WHERE localpart = $1 AND device_id = $2", localpart, deviceID).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("select device keys: %w", err)
	}
	return []byte(js), nil
}

func oneTimeKeyCounts(ctx context.Context, q sqlutil.Querier, localpart, deviceID string) (map[string]int, error) {
	rows, err := q.QueryContext(ctx, "SELECT algorithm, COUNT(*) FROM userapi_one_time_keys WHERE localpart = $1 AND device_id = $2 GROUP BY algorithm",
		localpart, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	counts := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		counts[alg] = n
	}
	return counts, rows.Err()
}

// DeviceKeys implements storage.Database.
func (d *Database) DeviceKeys(ctx context.Context, localpart string, deviceIDs []string) ([]storage.DeviceKeys, error) {
	query, args := "SELECT device_id, key_json FROM userapi_device_keys WHERE localpart = $1 ORDER BY device_id", []any{localpart}
	if len(deviceIDs) > 0 {
		query, args = d.db.Dialect.InList("SELECT device_id, key_json FROM userapi_device_keys WHERE localpart = $1 AND device_id IN ({ids}) ORDER BY device_id",
			"{ids}", args, deviceIDs)
	}
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select device keys: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.DeviceKeys
	for rows.Next() {
		var k storage.DeviceKeys
		var js string
		if err := rows.Scan(&k.DeviceID, &js); err != nil {
			return nil, fmt.Errorf("scan device keys: %w", err)
		}
		k.JSON = []byte(js)
		out = append(out, k)
	}
	return out, rows.Err()
}

// ClaimKey implements storage.Database. It picks a key, then deletes it with RETURNING: a
// concurrent claim that picked the same key waits for the first one's row lock
// (PostgreSQL; SQLite serialises writers), finds the row gone, deletes nothing and picks
// claimOneTimeKeySQL removes and returns the device's first one-time key of an algorithm in
// one statement. Under a concurrent claim of the same key it may remove nothing although
// other keys remain (PostgreSQL rechecks the deleted row, not the subquery): the caller
// picks again.
const claimOneTimeKeySQL = "DELETE FROM userapi_one_time_keys WHERE localpart = $1 AND device_id = $2 AND key_id = (" +
	"SELECT key_id FROM userapi_one_time_keys WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1)" +
	" RETURNING key_id, key_json"

// ClaimKeys implements storage.Database.
func (d *Database) ClaimKeys(ctx context.Context, claims []storage.KeyClaim) ([]*storage.OneTimeKey, error) {
	var keys []*storage.OneTimeKey
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		keys = make([]*storage.OneTimeKey, len(claims))
		for i, c := range claims {
			k, err := claimKey(ctx, tx, c)
			if err != nil {
				return err
			}
			keys[i] = k
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim keys: %w", err)
	}
	return keys, nil
}

// claimKey claims one key in tx: a one-time key, else the fallback key (marked used), else
// nil.
func claimKey(ctx context.Context, tx *sql.Tx, c storage.KeyClaim) (*storage.OneTimeKey, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var keyID, js string
		err := tx.QueryRowContext(ctx, claimOneTimeKeySQL, c.Localpart, c.DeviceID, c.Algorithm).Scan(&keyID, &js)
		if err == nil {
			return &storage.OneTimeKey{Algorithm: c.Algorithm, KeyID: keyID, JSON: []byte(js)}, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		var one int
		err = tx.QueryRowContext(ctx, "SELECT 1 FROM userapi_one_time_keys WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 LIMIT 1",
			c.Localpart, c.DeviceID, c.Algorithm).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return nil, err
		}
		// A concurrent claim took the key picked: pick again.
	}
	var keyID, js string
	err := tx.QueryRowContext(ctx,
		"UPDATE userapi_fallback_keys SET used = TRUE WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 RETURNING key_id, key_json",
		c.Localpart, c.DeviceID, c.Algorithm).Scan(&keyID, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &storage.OneTimeKey{Algorithm: c.Algorithm, KeyID: keyID, JSON: []byte(js)}, nil
}

// KeyCounts implements storage.Database.
func (d *Database) KeyCounts(ctx context.Context, localpart, deviceID string) (map[string]int, []string, error) {
	counts, err := oneTimeKeyCounts(ctx, d.db, localpart, deviceID)
	if err != nil {
		return nil, nil, fmt.Errorf("count one-time keys: %w", err)
	}
	rows, err := d.db.QueryContext(ctx,
		"SELECT algorithm FROM userapi_fallback_keys WHERE localpart = $1 AND device_id = $2 AND used = FALSE ORDER BY algorithm", localpart, deviceID)
	if err != nil {
		return nil, nil, fmt.Errorf("select fallback keys: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	unused := []string{}
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return nil, nil, fmt.Errorf("scan fallback key: %w", err)
		}
		unused = append(unused, alg)
	}
	return counts, unused, rows.Err()
}

// deleteDeviceKeys deletes the keys of deviceIDs (which were just deleted) and returns
// their KeyChanges, each with a new stream ID.
func deleteDeviceKeys(ctx context.Context, tx *sql.Tx, localpart string, deviceIDs []string) ([]storage.KeyChange, error) {
	var out []storage.KeyChange
	for _, id := range deviceIDs {
		for _, table := range []string{"userapi_device_keys", "userapi_one_time_keys", "userapi_fallback_keys"} {
			if _, err := tx.ExecContext(ctx, "DELETE FROM "+table+" WHERE localpart = $1 AND device_id = $2", localpart, id); err != nil {
				return nil, fmt.Errorf("delete keys of a deleted device: %w", err)
			}
		}
		stream, err := bumpStream(ctx, tx, localpart)
		if err != nil {
			return nil, err
		}
		out = append(out, storage.KeyChange{DeviceID: id, StreamID: stream, Deleted: true})
	}
	return out, nil
}

// CrossSigningKeys implements storage.Database.
func (d *Database) CrossSigningKeys(ctx context.Context, localpart string) (map[string][]byte, error) {
	return crossSigningKeys(ctx, d.db, localpart)
}

// crossSigningKeys is the account's cross-signing keys by purpose, read through q.
func crossSigningKeys(ctx context.Context, q sqlutil.Querier, localpart string) (map[string][]byte, error) {
	rows, err := q.QueryContext(ctx, "SELECT purpose, key_json FROM userapi_cross_signing_keys WHERE localpart = $1", localpart)
	if err != nil {
		return nil, fmt.Errorf("select cross-signing keys: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	out := map[string][]byte{}
	for rows.Next() {
		var purpose, js string
		if err := rows.Scan(&purpose, &js); err != nil {
			return nil, fmt.Errorf("scan cross-signing key: %w", err)
		}
		out[purpose] = []byte(js)
	}
	return out, rows.Err()
}

// PutCrossSigningKeys implements storage.Database.
func (d *Database) PutCrossSigningKeys(ctx context.Context, localpart string, keys map[string][]byte, ann storage.Announcement[storage.CrossSigningChange]) (int64, error) {
	var stream int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for purpose, js := range keys {
			if _, err := tx.ExecContext(ctx, "INSERT INTO userapi_cross_signing_keys (localpart, purpose, key_json) VALUES ($1, $2, $3)"+
				" ON CONFLICT (localpart, purpose) DO UPDATE SET key_json = excluded.key_json", localpart, purpose, string(js)); err != nil {
				return err
			}
		}
		var err error
		if stream, err = bumpStream(ctx, tx, localpart); err != nil {
			return err
		}
		all, err := crossSigningKeys(ctx, tx, localpart)
		if err != nil {
			return err
		}
		return insertAnnounced(ctx, tx, ann, storage.CrossSigningChange{StreamID: stream, Keys: all})
	})
	if err != nil {
		return 0, fmt.Errorf("store cross-signing keys: %w", err)
	}
	return stream, nil
}

// PutKeySignatures implements storage.Database.
func (d *Database) PutKeySignatures(ctx context.Context, sigs []storage.KeySignature, announce []string, ann storage.Announcement[map[string]int64]) (map[string]int64, error) {
	streams := map[string]int64{}
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for _, s := range sigs {
			if _, err := tx.ExecContext(ctx, "INSERT INTO userapi_key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)"+
				" VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature",
				s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature); err != nil {
				return err
			}
		}
		for _, local := range announce {
			id, err := bumpStream(ctx, tx, local)
			if err != nil {
				return err
			}
			streams[local] = id
		}
		return insertAnnounced(ctx, tx, ann, streams)
	})
	if err != nil {
		return nil, fmt.Errorf("store key signatures: %w", err)
	}
	return streams, nil
}

// KeySignatures implements storage.Database.
func (d *Database) KeySignatures(ctx context.Context, targetUserID string) ([]storage.KeySignature, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT target_key_id, signer_user_id, signer_key_id, signature FROM userapi_key_signatures WHERE target_user_id = $1",
		targetUserID)
	if err != nil {
		return nil, fmt.Errorf("select key signatures: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.KeySignature
	for rows.Next() {
		s := storage.KeySignature{TargetUserID: targetUserID}
		if err := rows.Scan(&s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
			return nil, fmt.Errorf("scan key signature: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// KeySignaturesBy implements storage.Database.
func (d *Database) KeySignaturesBy(ctx context.Context, signerUserID string, targetUserIDs []string) ([]storage.KeySignature, error) {
	query, args := d.db.Dialect.InList("SELECT target_user_id, target_key_id, signer_key_id, signature FROM userapi_key_signatures"+
		" WHERE target_user_id IN ({ids}) AND signer_user_id = $1", "{ids}", []any{signerUserID}, targetUserIDs)
	var out []storage.KeySignature
	if err := d.scanRows(ctx, query, args, func(rows *sql.Rows) error {
		s := storage.KeySignature{SignerUserID: signerUserID}
		if err := rows.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerKeyID, &s.Signature); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("select key signatures by %s: %w", signerUserID, err)
	}
	return out, nil
}

// DeviceListStream implements storage.Database.
func (d *Database) DeviceListStream(ctx context.Context, localpart string) (int64, error) {
	var id int64
	err := d.db.QueryRowContext(ctx, "SELECT stream_id FROM userapi_device_list_streams WHERE localpart = $1", localpart).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("select device list stream: %w", err)
	}
	return id, nil
}
