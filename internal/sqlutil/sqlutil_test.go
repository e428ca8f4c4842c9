package sqlutil_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

var migrations = []sqlutil.Migration{
	{Version: 1, SQL: "CREATE TABLE t_items (id {serial}, name TEXT NOT NULL UNIQUE, data {bytes}); CREATE INDEX t_items_name ON t_items (name)"},
	{Version: 2, SQL: "ALTER TABLE t_items ADD COLUMN n {bigint} NOT NULL DEFAULT 0"},
	{Version: 3, SQL: "CREATE TABLE t_pairs (a {bigint} NOT NULL, b {bigint} NOT NULL, PRIMARY KEY (a, b)) {without_rowid}"},
}

func TestSQLOnBothEngines(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		for i := 0; i < 2; i++ { // migrating twice is a no-op
			if err := sqlutil.Migrate(ctx, db, "t", migrations); err != nil {
				t.Fatalf("migrate (run %d): %v", i, err)
			}
		}
		var ids []int64
		err := db.WithTx(ctx, func(tx *sql.Tx) error {
			for _, name := range []string{"a", "b", "c"} {
				var id int64
				if err := tx.QueryRowContext(ctx, "INSERT INTO t_items (name, data, n) VALUES ($1, $2, $3) RETURNING id", name, []byte{0, 1}, 1<<40).Scan(&id); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = db.ExecContext(ctx, "INSERT INTO t_items (name) VALUES ($1)", "a")
		if !sqlutil.IsUniqueViolation(err) {
			t.Fatalf("duplicate insert: want unique violation, got %v", err)
		}
		boom := errors.New("boom")
		err = db.WithTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO t_items (name) VALUES ($1)", "rolled-back"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("want the callback's error, got %v", err)
		}
		for _, tc := range []struct {
			list []int64
			want int
		}{{ids[:2], 2}, {ids, 3}, {nil, 0}, {[]int64{-1}, 0}} {
			q, args := db.Dialect.InList("SELECT COUNT(*) FROM t_items WHERE n = $1 AND id IN ({ids})", "{ids}", []any{int64(1 << 40)}, tc.list)
			var n int
			if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			if n != tc.want {
				t.Fatalf("list %v: want %d rows, got %d", tc.list, tc.want, n)
			}
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO t_pairs (a, b) VALUES (1, 2), (1, 3)"); err != nil {
			t.Fatal(err)
		}
		_, err = db.ExecContext(ctx, "INSERT INTO t_pairs (a, b) VALUES (1, 2)")
		if !sqlutil.IsUniqueViolation(err) {
			t.Fatalf("duplicate key in t_pairs: want unique violation, got %v", err)
		}
		if db.Engine() == sqlutil.SQLite {
			if _, err := db.ExecContext(ctx, "SELECT rowid FROM t_pairs"); err == nil {
				t.Fatal("t_pairs has a rowid: {without_rowid} was left out")
			}
		}
		var rolledBack int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_items WHERE name = 'rolled-back'").Scan(&rolledBack); err != nil || rolledBack != 0 {
			t.Fatalf("rolled back row is visible: %d %v", rolledBack, err)
		}
	})
}

// TestSQLiteFileModes: a new SQLite database and the -wal and -shm files SQLite makes next
// to it are 0600 in a directory created 0700, whatever the umask; an existing database
// that others could read is restricted when opened; a world-writable directory is refused.
func TestSQLiteFileModes(t *testing.T) {
	root := t.TempDir() // before the umask changes: the testing package makes it 0777 &^ umask
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(root, "data", "x.db")
	db, err := sqlutil.Open("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // test end
	if _, err = db.Exec("CREATE TABLE t (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700, path: 0o600, path + "-wal": 0o600, path + "-shm": 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}

	legacy := filepath.Join(root, "legacy.db")
	for _, p := range []string{legacy, legacy + "-wal"} {
		if err = os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ldb, err := sqlutil.Open("file:" + legacy)
	if err != nil {
		t.Fatal(err)
	}
	defer ldb.Close() // nolint: errcheck // test end
	for _, p := range []string{legacy, legacy + "-wal"} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s of an existing database: %v %v", p, fi.Mode(), err)
		}
	}

	open := filepath.Join(root, "open")
	if err = os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err = sqlutil.Open("file:" + filepath.Join(open, "x.db")); err == nil || !strings.Contains(err.Error(), "chmod go-w "+open) {
		t.Fatalf("database in a world-writable directory: %v", err)
	}
}

// TestConcurrentMigrations migrates an empty database from eight connections at once, as
// roomserver shards starting together on one PostgreSQL database do, for ten fresh sets of
// tables: every migration succeeds at the first attempt (PostgreSQL failed one of two
// concurrent CREATE TABLE IF NOT EXISTS with a duplicate key in pg_type_typname_nsp_index)
// and each version is recorded once.
func TestConcurrentMigrations(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		for round := range 10 {
			component := fmt.Sprintf("race%d", round)
			ms := []sqlutil.Migration{
				{Version: 1, SQL: "CREATE TABLE IF NOT EXISTS " + component + "_items (id {serial}, name TEXT NOT NULL UNIQUE); CREATE INDEX IF NOT EXISTS " + component + "_items_name ON " + component + "_items (name)"},
				{Version: 2, SQL: "ALTER TABLE " + component + "_items ADD COLUMN n {bigint} NOT NULL DEFAULT 0"},
			}
			errs := make(chan error, 8)
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- sqlutil.Migrate(ctx, db, component, ms)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("round %d: concurrent migration failed: %v", round, err)
				}
			}
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+component+"_schema_version").Scan(&n); err != nil || n != 2 {
				t.Fatalf("round %d: %d versions recorded (%v), want 2", round, n, err)
			}
		}
	})
}

// TestDialectRows inserts 300 rows of three columns with one statement whose placeholders
// Rows wrote, and reads them back; on SQLite the placeholders are anonymous ("?"), which
// SQLite neither names nor looks up.
func TestDialectRows(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, "CREATE TABLE t_rows (a TEXT NOT NULL, b BIGINT NOT NULL, c BOOLEAN NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		const n = 300
		var args []any
		for i := range n {
			args = append(args, fmt.Sprintf("row %d", i), int64(i)*1000, i%3 == 0)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO t_rows (a, b, c) VALUES "+db.Dialect.Rows(n, 3), args...); err != nil {
			t.Fatal(err)
		}
		rows, err := db.QueryContext(ctx, "SELECT a, b, c FROM t_rows ORDER BY b")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close() // nolint: errcheck // read-only
		i := 0
		for ; rows.Next(); i++ {
			var a string
			var b int64
			var c bool
			if err := rows.Scan(&a, &b, &c); err != nil {
				t.Fatal(err)
			}
			if a != fmt.Sprintf("row %d", i) || b != int64(i)*1000 || c != (i%3 == 0) {
				t.Fatalf("row %d: %q %d %v", i, a, b, c)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if i != n {
			t.Fatalf("%d rows, want %d", i, n)
		}
		want := map[sqlutil.Engine]string{sqlutil.SQLite: "(?, ?), (?, ?)", sqlutil.Postgres: "($1, $2), ($3, $4)"}[db.Engine()]
		if got := db.Dialect.Rows(2, 2); got != want {
			t.Fatalf("Rows(2, 2) = %q, want %q", got, want)
		}
	})
}

// TestIsUnavailable: a database that cannot serve a statement now (SQLite locked by another
// writer; a PostgreSQL session ended by the server) is unavailable, and a statement refused
// for what it holds (a unique violation, an unknown table) is not, on either engine.
func TestIsUnavailable(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, "CREATE TABLE t_u (name TEXT NOT NULL UNIQUE)"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO t_u (name) VALUES ('a')"); err != nil {
			t.Fatal(err)
		}
		_, err := db.ExecContext(ctx, "INSERT INTO t_u (name) VALUES ('a')")
		if err == nil || sqlutil.IsUnavailable(err) {
			t.Fatalf("unique violation: %v counted unavailable", err)
		}
		_, err = db.ExecContext(ctx, "SELECT * FROM t_missing")
		if err == nil || sqlutil.IsUnavailable(err) {
			t.Fatalf("unknown table: %v counted unavailable", err)
		}
		if sqlutil.IsUnavailable(nil) {
			t.Fatal("nil counted unavailable")
		}
		if db.Engine() == sqlutil.SQLite {
			var seq int
			var name, path string
			if err := db.QueryRowContext(ctx, "PRAGMA database_list").Scan(&seq, &name, &path); err != nil {
				t.Fatal(err)
			}
			holder, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Rollback() // nolint: errcheck // only releases the lock
			if _, err := holder.ExecContext(ctx, "INSERT INTO t_u (name) VALUES ('b')"); err != nil {
				t.Fatal(err)
			}
			other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)&_txlock=immediate")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close() // nolint: errcheck // a test connection
			_, err = other.BeginTx(ctx, nil)
			if err == nil || !sqlutil.IsUnavailable(err) {
				t.Fatalf("locked database: %v not counted unavailable", err)
			}
			return
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close() // nolint: errcheck // the connection is gone
		_, err = conn.ExecContext(ctx, "SELECT pg_terminate_backend(pg_backend_pid())")
		if err == nil {
			_, err = conn.ExecContext(ctx, "SELECT 1")
		}
		if err == nil || !sqlutil.IsUnavailable(err) {
			t.Fatalf("terminated session: %v not counted unavailable", err)
		}
	})
}

// TestInList: InList's placeholders stand for the list's elements on both engines wherever
// the query's own parameters stand: before the list (on SQLite then anonymous, "?"), after
// it, out of order, in a second list, and with a quoted '?' and '$1' before it.
func TestInList(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, "CREATE TABLE t_in (id BIGINT PRIMARY KEY, tag TEXT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		for id := int64(1); id <= 10; id++ {
			tag := map[bool]string{true: "a", false: "b"}[id%2 == 1]
			if _, err := db.ExecContext(ctx, "INSERT INTO t_in (id, tag) VALUES ($1, $2)", id, tag); err != nil {
				t.Fatal(err)
			}
		}
		count := func(q string, args []any) int {
			t.Helper()
			var n int
			if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			return n
		}
		q, args := db.Dialect.InList("SELECT COUNT(*) FROM t_in WHERE tag = $1 AND id IN ({ids})", "{ids}", []any{"a"}, []int64{1, 2, 3, 5})
		if n := count(q, args); n != 3 {
			t.Fatalf("parameter before the list: %d rows, want 3", n)
		}
		if anonymous := strings.Contains(q, "?"); anonymous != (db.Engine() == sqlutil.SQLite) {
			t.Fatalf("anonymous placeholders on %v: %s", db.Engine(), q)
		}
		for _, tc := range []struct {
			query string
			args  []any
			list  []int64
			want  int
		}{
			{"SELECT COUNT(*) FROM t_in WHERE id IN ({ids}) AND tag = $1", []any{"a"}, []int64{1, 2, 3, 5}, 3},
			{"SELECT COUNT(*) FROM t_in WHERE tag = $2 AND id > $1 AND id IN ({ids})", []any{int64(1), "a"}, []int64{1, 3, 5}, 2},
			{"SELECT COUNT(*) FROM t_in WHERE tag <> '?$1' AND tag = $1 AND id IN ({ids})", []any{"a"}, []int64{1, 2, 3}, 2},
			{"SELECT COUNT(*) FROM t_in WHERE id IN ({ids})", nil, []int64{4, 5, 6, 40}, 3},
		} {
			q, args := db.Dialect.InList(tc.query, "{ids}", tc.args, tc.list)
			if n := count(q, args); n != tc.want {
				t.Fatalf("%s with %v: %d rows, want %d", q, args, n, tc.want)
			}
		}
		q, args = db.Dialect.InList("SELECT COUNT(*) FROM t_in WHERE tag = $1 AND id IN ({a}) AND id IN ({b})", "{a}", []any{"a"}, []int64{1, 3, 5, 7})
		q, args = db.Dialect.InList(q, "{b}", args, []int64{3, 4, 5, 6})
		if n := count(q, args); n != 2 {
			t.Fatalf("two lists, %s: %d rows, want 2", q, n)
		}
	})
}
