package sqlutil_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// BenchmarkInListSQLite: one query with an IN list of n of a table's 1000 ids, its
// parameter before the list ("anonymous": InList's "?") or after it ("numbered": "$N").
func BenchmarkInListSQLite(b *testing.B) {
	ctx := context.Background()
	db, err := sqlutil.Open("file:" + filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // the benchmark's own file
	if _, err = db.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, room TEXT NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		if _, err = db.ExecContext(ctx, "INSERT INTO t (id, room) VALUES ($1, 'r')", i); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{50, 500} {
		ids := make([]int64, n)
		for i := range ids {
			ids[i] = int64(i * 2)
		}
		for _, c := range []struct{ name, query string }{
			{"anonymous", "SELECT COUNT(*) FROM t WHERE room = $1 AND id IN ({ids})"},
			{"numbered", "SELECT COUNT(*) FROM t WHERE id IN ({ids}) AND room = $1"},
		} {
			b.Run(fmt.Sprintf("n=%d/%s", n, c.name), func(b *testing.B) {
				q, args := db.Dialect.InList(c.query, "{ids}", []any{"r"}, ids)
				for b.Loop() {
					var got int
					if err := db.QueryRowContext(ctx, q, args...).Scan(&got); err != nil || got != n {
						b.Fatal(got, err)
					}
				}
			})
		}
	}
}
