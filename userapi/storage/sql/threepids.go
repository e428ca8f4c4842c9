package sql

import (
	"context"
	"fmt"

	"github.com/matrix-org/dendrite/userapi/storage"
)

// PutThreePID implements storage.Database.
func (d *Database) PutThreePID(ctx context.Context, localpart string, tp *storage.ThreePID) error {
	_, err := d.db.ExecContext(ctx, "INSERT INTO userapi_threepids (medium, address, localpart, id_server, added_ts) VALUES ($1, $2, $3, $4, $5)"+
		" ON CONFLICT (medium, address) DO UPDATE SET localpart = excluded.localpart, id_server = excluded.id_server, added_ts = excluded.added_ts",
		tp.Medium, tp.Address, localpart, tp.IDServer, tp.AddedTS)
	if err != nil {
		return fmt.Errorf("upsert 3pid: %w", err)
	}
	return nil
}

// DeleteThreePID implements storage.Database.
func (d *Database) DeleteThreePID(ctx context.Context, localpart, medium, address string) error {
	_, err := d.db.ExecContext(ctx, "DELETE FROM userapi_threepids WHERE localpart = $1 AND medium = $2 AND address = $3", localpart, medium, address)
	if err != nil {
		return fmt.Errorf("delete 3pid: %w", err)
	}
	return nil
}

// ThreePIDs implements storage.Database.
func (d *Database) ThreePIDs(ctx context.Context, localpart string) ([]storage.ThreePID, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT medium, address, id_server, added_ts FROM userapi_threepids WHERE localpart = $1 ORDER BY medium, address", localpart)
	if err != nil {
		return nil, fmt.Errorf("select 3pids: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err is checked
	var out []storage.ThreePID
	for rows.Next() {
		var tp storage.ThreePID
		if err := rows.Scan(&tp.Medium, &tp.Address, &tp.IDServer, &tp.AddedTS); err != nil {
			return nil, fmt.Errorf("scan 3pid: %w", err)
		}
		out = append(out, tp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select 3pids: %w", err)
	}
	return out, nil
}
