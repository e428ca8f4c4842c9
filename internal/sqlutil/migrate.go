package sqlutil

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Migration is one numbered schema step, the same for both engines: SQL is engine-neutral
// DDL (see Dialect.Schema) of one or more statements; Up, when set, runs instead.
type Migration struct {
	Version int
	SQL     string
	Up      func(ctx context.Context, tx *sql.Tx, d Dialect) error
}

// Migrate applies every migration above the version recorded in
// "<component>_schema_version", each in its own transaction.
func Migrate(ctx context.Context, db *DB, component string, migrations []Migration) error {
	table := component + "_schema_version"
	return db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+table+" (version INTEGER NOT NULL)"); err != nil {
			return fmt.Errorf("create %s: %w", table, err)
		}
		if db.Engine() == Postgres {
			// Several processes may start at once on one database: one migrates, the others wait.
			if _, err := tx.ExecContext(ctx, "LOCK TABLE "+table+" IN EXCLUSIVE MODE"); err != nil {
				return err
			}
		}
		var current int
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+table).Scan(&current); err != nil {
			return fmt.Errorf("read %s: %w", table, err)
		}
		for _, m := range migrations {
			if m.Version <= current {
				continue
			}
			if err := apply(ctx, tx, db.Dialect, m); err != nil {
				return fmt.Errorf("%s migration %d: %w", component, m.Version, err)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO "+table+" (version) VALUES ($1)", m.Version); err != nil {
				return err
			}
		}
		return nil
	})
}

func apply(ctx context.Context, tx *sql.Tx, d Dialect, m Migration) error {
	if m.Up != nil {
		return m.Up(ctx, tx, d)
	}
	for _, stmt := range strings.Split(d.Schema(m.SQL), ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", strings.TrimSpace(stmt), err)
		}
	}
	return nil
}
