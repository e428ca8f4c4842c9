package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// InsertAlias implements storage.Directory. The insert and the lookup of an alias that
// exists run in one transaction, so the answer is the row that won.
func (d *Database) InsertAlias(ctx context.Context, a storage.Alias) (*storage.Alias, error) {
	var existing *storage.Alias
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO roomserver_room_aliases (alias, room_id, creator_id) VALUES ($1, $2, $3)
			ON CONFLICT (alias) DO NOTHING`, a.Alias, a.RoomID, a.Creator)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		existing = &storage.Alias{Alias: a.Alias}
		return tx.QueryRowContext(ctx, "SELECT room_id, creator_id FROM roomserver_room_aliases WHERE alias = $1", a.Alias).
			Scan(&existing.RoomID, &existing.Creator)
	})
	if err != nil {
		return nil, fmt.Errorf("insert alias: %w", err)
	}
	return existing, nil
}

// Alias implements storage.Directory.
func (d *Database) Alias(ctx context.Context, alias string) (*storage.Alias, error) {
	a := storage.Alias{Alias: alias}
	err := d.db.QueryRowContext(ctx, "SELECT room_id, creator_id FROM roomserver_room_aliases WHERE alias = $1", alias).
		Scan(&a.RoomID, &a.Creator)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select alias: %w", err)
	}
	return &a, nil
}

// AliasesForRoom implements storage.Directory.
func (d *Database) AliasesForRoom(ctx context.Context, roomID string) ([]string, error) {
	return d.strings(ctx, "SELECT alias FROM roomserver_room_aliases WHERE room_id = $1 ORDER BY alias", roomID)
}

// DeleteAlias implements storage.Directory.
func (d *Database) DeleteAlias(ctx context.Context, alias string) (bool, error) {
	var n int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM roomserver_room_aliases WHERE alias = $1", alias)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("delete alias: %w", err)
	}
	return n > 0, nil
}

// SetPublished implements storage.Directory.
func (d *Database) SetPublished(ctx context.Context, roomID string, public bool) error {
	query := "DELETE FROM roomserver_published_rooms WHERE room_id = $1"
	if public {
		query = "INSERT INTO roomserver_published_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING"
	}
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, query, roomID)
		return err
	})
	if err != nil {
		return fmt.Errorf("set room visibility: %w", err)
	}
	return nil
}

// Published implements storage.Directory.
func (d *Database) Published(ctx context.Context, roomID string) (bool, error) {
	var one int
	err := d.db.QueryRowContext(ctx, "SELECT 1 FROM roomserver_published_rooms WHERE room_id = $1", roomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("select room visibility: %w", err)
	}
	return true, nil
}

// SetNetworkPublished implements storage.Directory.
func (d *Database) SetNetworkPublished(ctx context.Context, network, roomID string, public bool) error {
	query := "DELETE FROM roomserver_network_rooms WHERE network = $1 AND room_id = $2"
	if public {
		query = "INSERT INTO roomserver_network_rooms (network, room_id) VALUES ($1, $2) ON CONFLICT (network, room_id) DO NOTHING"
	}
	if _, err := d.db.ExecContext(ctx, query, network, roomID); err != nil {
		return fmt.Errorf("set network visibility of %s: %w", roomID, err)
	}
	return nil
}

// NetworkRooms implements storage.Directory.
func (d *Database) NetworkRooms(ctx context.Context, network string) ([]string, error) {
	if network == "" {
		return d.strings(ctx, "SELECT DISTINCT room_id FROM roomserver_network_rooms ORDER BY room_id")
	}
	return d.strings(ctx, "SELECT room_id FROM roomserver_network_rooms WHERE network = $1 ORDER BY room_id", network)
}

// PublishedRooms implements storage.Directory.
func (d *Database) PublishedRooms(ctx context.Context) ([]string, error) {
	return d.strings(ctx, "SELECT room_id FROM roomserver_published_rooms ORDER BY room_id")
}

// JoinedCount implements storage.Directory.
func (d *Database) JoinedCount(ctx context.Context, roomNID types.RoomNID) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM roomserver_memberships WHERE room_nid = $1 AND membership = $2", roomNID, spec.Join).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count joined members: %w", err)
	}
	return n, nil
}

// strings runs a query answering one text column.
func (d *Database) strings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	out := []string{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
