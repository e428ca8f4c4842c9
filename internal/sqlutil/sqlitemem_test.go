package sqlutil_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// TestSQLiteMemoryLimit: with a soft limit, 32 connections to four databases scanning 10 MB
// tables keep SQLite's memory near the limit, sharing one budget of cached pages; without
// one, each connection keeps up to 2 MB of pages and the same scans take several times the
// limit.
func TestSQLiteMemoryLimit(t *testing.T) {
	const limit = 6 << 20
	before, err := sqlutil.SetSQLiteMemoryLimit(limit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = sqlutil.SetSQLiteMemoryLimit(before) })
	ctx := context.Background()
	var dbs []*sqlutil.DB
	row := strings.Repeat("x", 1000)
	for range 4 {
		db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "m.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		dbs = append(dbs, db)
		err = db.WithTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"); err != nil {
				return err
			}
			for j := range 10000 {
				if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES ($1, $2)", j, row); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	scan := func() (total, pages int64) {
		var wg sync.WaitGroup
		for _, db := range dbs {
			for range 8 {
				wg.Go(func() {
					var n int
					if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t WHERE v LIKE 'y%'").Scan(&n); err != nil {
						t.Error(err)
					}
				})
			}
		}
		wg.Wait()
		return sqlutil.SQLiteMemory()
	}
	total, pages := scan()
	t.Logf("limit %d MiB: SQLite holds %.1f MiB, %.1f MiB of it pages", limit>>20, float64(total)/(1<<20), float64(pages)/(1<<20))
	if total > limit+limit/4 {
		t.Errorf("SQLite holds %d bytes under a limit of %d", total, limit)
	}
	if _, err = sqlutil.SetSQLiteMemoryLimit(0); err != nil {
		t.Fatal(err)
	}
	total, pages = scan()
	t.Logf("no limit: SQLite holds %.1f MiB, %.1f MiB of it pages", float64(total)/(1<<20), float64(pages)/(1<<20))
	if pages < 3*limit {
		t.Errorf("without a limit SQLite holds %d bytes of pages, want over %d (the limit did not bound it)", pages, 3*limit)
	}
}
