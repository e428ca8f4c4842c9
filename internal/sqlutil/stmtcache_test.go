package sqlutil_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // the uncached driver, for the benchmark's comparison

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// openSQLiteConn opens a SQLite database of Open's with a table t of rows 1..n and returns
// its one connection.
func openSQLiteConn(t *testing.T, n int) *sql.Conn {
	t.Helper()
	db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // as above
	if _, err = conn.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if _, err = conn.ExecContext(ctx, "INSERT INTO t (id, name) VALUES ($1, $2)", i, fmt.Sprint("n", i)); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// ids reads every id of rows.
func ids(t *testing.T, rows *sql.Rows) []int {
	t.Helper()
	defer rows.Close() // nolint: errcheck // read-only; rows.Err reports
	var out []int
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStatementCacheReusesStatements: a statement run twice on a connection is prepared
// once and kept, most recently used first.
func TestStatementCacheReusesStatements(t *testing.T) {
	conn := openSQLiteConn(t, 3)
	ctx := context.Background()
	const q = "SELECT id FROM t WHERE id >= $1 ORDER BY id"
	for range 2 {
		rows, err := conn.QueryContext(ctx, q, 2)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(t, rows); fmt.Sprint(got) != "[2 3]" {
			t.Fatalf("ids %v, want [2 3]", got)
		}
	}
	cached, err := sqlutil.CachedStatements(conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(cached) == 0 || cached[0] != q {
		t.Fatalf("cached statements %q, want %q first", cached, q)
	}
	n := 0
	for _, c := range cached {
		if c == q {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%q cached %d times, want once", q, n)
	}
}

// TestStatementCacheNestedQuery: the same SQL queried again while a result set of it is
// open (a nested loop over one connection) gives both their own results; reusing the open
// one's statement would reset it under the outer loop.
func TestStatementCacheNestedQuery(t *testing.T) {
	conn := openSQLiteConn(t, 3)
	ctx := context.Background()
	const q = "SELECT id FROM t WHERE id >= $1 ORDER BY id"
	outer, err := conn.QueryContext(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	var seen []int
	for outer.Next() {
		var id int
		if err = outer.Scan(&id); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, id)
		inner, err := conn.QueryContext(ctx, q, id)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(ids(t, inner)), 4-id; got != want {
			t.Fatalf("inner query from %d: %d rows, want %d", id, got, want)
		}
		if _, err = conn.ExecContext(ctx, "UPDATE t SET name = $1 WHERE id = $2", "seen", id); err != nil {
			t.Fatal(err)
		}
	}
	if err = outer.Close(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[1 2 3]" {
		t.Fatalf("outer loop saw %v, want [1 2 3]", seen)
	}
}

// TestStatementCacheBounded: a connection keeps at most StmtCacheSize statements; one that
// falls out while its result set is open keeps serving that result set.
func TestStatementCacheBounded(t *testing.T) {
	conn := openSQLiteConn(t, 3)
	ctx := context.Background()
	first, err := conn.QueryContext(ctx, "SELECT id FROM t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	if !first.Next() {
		t.Fatal("no first row")
	}
	for i := range sqlutil.StmtCacheSize + 10 {
		var n int
		if err = conn.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) + %d FROM t", i)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 3+i {
			t.Fatalf("query %d: %d, want %d", i, n, 3+i)
		}
	}
	cached, err := sqlutil.CachedStatements(conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(cached) != sqlutil.StmtCacheSize {
		t.Fatalf("%d statements cached, want %d", len(cached), sqlutil.StmtCacheSize)
	}
	rest := 1
	for first.Next() {
		rest++
	}
	if err = first.Close(); err != nil {
		t.Fatal(err)
	}
	if rest != 3 {
		t.Fatalf("the evicted statement's result set gave %d rows, want 3", rest)
	}
}

// TestStatementCacheSeesSchemaChanges: a statement prepared before a column was added
// returns it afterwards (SQLite prepares it again when the schema changed).
func TestStatementCacheSeesSchemaChanges(t *testing.T) {
	conn := openSQLiteConn(t, 1)
	ctx := context.Background()
	const q = "SELECT * FROM t"
	columns := func() int {
		rows, err := conn.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close() // nolint: errcheck // read-only
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		return len(cols)
	}
	if n := columns(); n != 2 {
		t.Fatalf("%d columns, want 2", n)
	}
	if _, err := conn.ExecContext(ctx, "ALTER TABLE t ADD COLUMN extra TEXT"); err != nil {
		t.Fatal(err)
	}
	if n := columns(); n != 3 {
		t.Fatalf("%d columns after ALTER TABLE, want 3", n)
	}
}

// BenchmarkSQLiteStatements runs a keyed SELECT and an UPDATE, the shape of most of the
// server's statements, through Open's connections (statements kept prepared) and through
// the plain driver (prepared on every call).
func BenchmarkSQLiteStatements(b *testing.B) {
	run := func(b *testing.B, db *sql.DB) {
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER NOT NULL DEFAULT 0)"); err != nil {
			b.Fatal(err)
		}
		for i := range 100 {
			if _, err := db.ExecContext(ctx, "INSERT INTO t (id, name) VALUES ($1, $2)", i, fmt.Sprint("n", i)); err != nil {
				b.Fatal(err)
			}
		}
		var i int
		for b.Loop() {
			var name string
			if err := db.QueryRowContext(ctx, "SELECT name FROM t WHERE id = $1", i%100).Scan(&name); err != nil {
				b.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, "UPDATE t SET n = n + 1 WHERE id = $1", i%100); err != nil {
				b.Fatal(err)
			}
			i++
		}
	}
	b.Run("cached", func(b *testing.B) {
		db, err := sqlutil.Open("file:" + filepath.Join(b.TempDir(), "b.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close() // nolint: errcheck // benchmark teardown
		run(b, db.DB)
	})
	b.Run("uncached", func(b *testing.B) {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(b.TempDir(), "b.db")+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close() // nolint: errcheck // benchmark teardown
		run(b, db)
	})
}
