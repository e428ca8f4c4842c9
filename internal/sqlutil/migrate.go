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

// migrationLock is the PostgreSQL advisory lock key Migrate holds: one for every
// component, so that migrations of one database never run concurrently ("dendrite" in
// ASCII, as a number).
const migrationLock int64 = 0x64656e6472697465

// Migrate applies every migration above the version recorded in
// "<component>_schema_version", each in its own transaction.
func Migrate(ctx context.Context, db *DB, component string, migrations []Migration) error {
	table := component + "_schema_version"
	return db.WithTx(ctx, func(tx *sql.Tx) error {
		if db.Engine() == Postgres {
			// Several processes may start at once on one database (roomserver shards, or
			// components sharing it): one migrates, the others wait. The lock comes before
			// any DDL, since two concurrent CREATE TABLE IF NOT EXISTS of one table fail one
			// of them (a duplicate key in pg_type_typname_nsp_index); it is held until the
			// transaction ends. SQLite's writes are serialized by WithTx already.
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
				return fmt.Errorf("take the migration lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+table+" (version INTEGER NOT NULL)"); err != nil {
			return fmt.Errorf("create %s: %w", table, err)
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
