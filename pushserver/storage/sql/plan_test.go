package sql_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
)

// TestNotificationQueryPlans explains the statements that list, mark read and prune
// notifications, over 600 messages in rooms of 20, and checks that each reads
// pushserver_notifications through the index meant for it. On PostgreSQL sequential
// scans are disabled for the check, so that the small table's plan is the one a large
// table gets (a sequential scan chosen anyway would mean no index fits).
func TestNotificationQueryPlans(t *testing.T) {
	want := map[sqlutil.Engine]map[string]string{
		sqlutil.SQLite: {
			"list":                   "SEARCH pushserver_notifications USING INDEX pushserver_notifications_user (user_nid=?)",
			"list before":            "SEARCH pushserver_notifications USING INDEX pushserver_notifications_user (user_nid=? AND pos<?)",
			"list highlights before": "SEARCH pushserver_notifications USING INDEX pushserver_notifications_highlights (user_nid=? AND pos<?)",
			"mark read":              "SEARCH pushserver_notifications USING INDEX pushserver_notifications_user (user_nid=? AND pos>? AND pos<?)",
			"mark thread read":       "SEARCH pushserver_notifications USING INDEX pushserver_notifications_user (user_nid=? AND pos>? AND pos<?)",
			"prune scan":             "SEARCH n USING PRIMARY KEY (pos>?)",
			"prune":                  "SEARCH pushserver_notifications USING PRIMARY KEY (pos>? AND pos<?)",
		},
		// PostgreSQL picks an index scan or a bitmap scan of the index by its estimates.
		sqlutil.Postgres: {
			"list":                   "pushserver_notifications_user",
			"list before":            "pushserver_notifications_user",
			"list highlights before": "pushserver_notifications_highlights",
			"mark read":              "pushserver_notifications_user",
			"mark thread read":       "pushserver_notifications_user",
			"prune scan":             "pushserver_notifications_order",
			"prune":                  "pushserver_notifications_order",
		},
	}
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now().Add(-sizeSpan)
		for i := range 600 {
			recordMessage(ctx, t, db, store, i, start.Add(time.Duration(i)*time.Minute))
		}
		nid := func(id string) int64 {
			var n int64
			if err := db.QueryRowContext(ctx, `SELECT nid FROM pushserver_nids WHERE id = $1`, id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		user := "@user3:bench.test"
		for _, q := range pushsql.HotQueries(user, nid(user), nid("!room3:bench.test")) {
			var plan []string
			withTx(t, db, func(tx *sql.Tx) error {
				explain := "EXPLAIN QUERY PLAN "
				if db.Engine() == sqlutil.Postgres {
					explain = "EXPLAIN "
					if _, err := tx.ExecContext(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
						return err
					}
				}
				plan = explainRows(t, tx, explain+q.SQL, q.Args)
				return nil
			})
			text := strings.Join(plan, "\n")
			if w := want[db.Engine()][q.Name]; !strings.Contains(text, w) || strings.Contains(text, "TEMP B-TREE") ||
				strings.Contains(text, "Seq Scan on pushserver_notifications") {
				t.Errorf("plan of %s:\n%s\nwant %q, no sort in a temporary B-tree, no sequential scan", q.Name, text, w)
			}
		}
	})
}

// explainRows are the lines of an EXPLAIN, each row's columns joined.
func explainRows(t *testing.T, tx *sql.Tx, query string, args []any) []string {
	t.Helper()
	rows, err := tx.QueryContext(context.Background(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprint(vals...))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
