package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/matrix-org/dendrite/userapi/storage"
)

const upsertAccountDataSQL = "INSERT INTO userapi_account_data (localpart, room_id, data_type, content) VALUES ($1, $2, $3, $4)" +
	" ON CONFLICT (localpart, room_id, data_type) DO UPDATE SET content = excluded.content"

// PutAccountData implements storage.Database.
func (d *Database) PutAccountData(ctx context.Context, localpart string, data *storage.AccountData, out *storage.Output) (*storage.Outbound, error) {
	var o *storage.Outbound
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, upsertAccountDataSQL, localpart, data.RoomID, data.Type, string(data.Content)); err != nil {
			return err
		}
		var err error
		o, err = insertOutput(ctx, tx, out)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("upsert account data: %w", err)
	}
	return o, nil
}

// UpdateAccountData implements storage.Database. The row is created empty if missing and
// then locked (an UPDATE that changes nothing takes the row lock on PostgreSQL; SQLite
// serializes the whole transaction), so concurrent updates of one piece of data never
// lose each other's change.
func (d *Database) UpdateAccountData(ctx context.Context, localpart, roomID, dataType string, update func(old []byte) ([]byte, error), out *storage.Output) ([]byte, *storage.Outbound, error) {
	var updated []byte
	var o *storage.Outbound
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO userapi_account_data (localpart, room_id, data_type, content) VALUES ($1, $2, $3, '')"+
			" ON CONFLICT (localpart, room_id, data_type) DO NOTHING", localpart, roomID, dataType); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE userapi_account_data SET content = content WHERE localpart = $1 AND room_id = $2 AND data_type = $3",
			localpart, roomID, dataType); err != nil {
			return err
		}
		var old string
		if err := tx.QueryRowContext(ctx, "SELECT content FROM userapi_account_data WHERE localpart = $1 AND room_id = $2 AND data_type = $3",
			localpart, roomID, dataType).Scan(&old); err != nil {
			return err
		}
		var err error
		var prev []byte
		if old != "" {
			prev = []byte(old)
		}
		if updated, err = update(prev); err != nil {
			return err
		}
		if _, err = tx.ExecContext(ctx, upsertAccountDataSQL, localpart, roomID, dataType, string(updated)); err != nil {
			return err
		}
		o, err = insertOutput(ctx, tx, out)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("update account data: %w", err)
	}
	return updated, o, nil
}

// AccountData implements storage.Database. The conditions "$n = ”" let one query text
// serve every combination of filters.
func (d *Database) AccountData(ctx context.Context, localpart, roomID, dataType string) ([]storage.AccountData, error) {
	rows, err := d.db.QueryContext(ctx,
		"SELECT room_id, data_type, content FROM userapi_account_data WHERE localpart = $1"+
			" AND ($2 = '' OR room_id = $2) AND ($3 = '' OR data_type = $3) ORDER BY room_id, data_type",
		localpart, roomID, dataType)
	if err != nil {
		return nil, fmt.Errorf("select account data: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.AccountData
	for rows.Next() {
		var ad storage.AccountData
		var content string
		if err := rows.Scan(&ad.RoomID, &ad.Type, &content); err != nil {
			return nil, fmt.Errorf("scan account data: %w", err)
		}
		ad.Content = []byte(content)
		out = append(out, ad)
	}
	return out, rows.Err()
}

// PutFilter implements storage.Database.
func (d *Database) PutFilter(ctx context.Context, localpart string, filter []byte) (string, error) {
	var id int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx,
			"SELECT filter_id FROM userapi_filters WHERE localpart = $1 AND filter = $2", localpart, string(filter)).Scan(&id)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return tx.QueryRowContext(ctx,
			"INSERT INTO userapi_filters (localpart, filter) VALUES ($1, $2) RETURNING filter_id", localpart, string(filter)).Scan(&id)
	})
	if err != nil {
		return "", fmt.Errorf("insert filter: %w", err)
	}
	return strconv.FormatInt(id, 10), nil
}

// Filter implements storage.Database.
func (d *Database) Filter(ctx context.Context, localpart, filterID string) ([]byte, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil {
		return nil, storage.ErrNotFound
	}
	var filter string
	err = d.db.QueryRowContext(ctx,
		"SELECT filter FROM userapi_filters WHERE localpart = $1 AND filter_id = $2", localpart, id).Scan(&filter)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select filter: %w", err)
	}
	return []byte(filter), nil
}
