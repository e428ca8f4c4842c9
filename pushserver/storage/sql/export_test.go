package sql

import "github.com/matrix-org/dendrite/internal/sqlutil"

// MigrationsUpTo are the schema's migrations up to version v, to build a database as an
// earlier release left it.
func MigrationsUpTo(v int) []sqlutil.Migration {
	return migrations[:v]
}

// HotQuery is a statement on pushserver_notifications with arguments to explain it with.
type HotQuery struct {
	Name string
	SQL  string
	Args []any
}

// HotQueries are the statements that read or change pushserver_notifications by an
// index: the user's nid is userNID, the room's roomNID.
func HotQueries(userID string, userNID, roomNID int64) []HotQuery {
	return []HotQuery{
		{"list", notificationsSQL(false, false), []any{userID, 20}},
		{"list before", notificationsSQL(true, false), []any{userID, 20, 500}},
		{"list highlights before", notificationsSQL(true, true), []any{userID, 20, 500}},
		{"mark read", markReadSQL(false), []any{userNID, roomNID, 500, 100}},
		{"mark thread read", markReadSQL(true), []any{userNID, roomNID, 500, 100, "$root"}},
		{"prune scan", pruneScanSQL, []any{100, 1000}},
		{"prune", pruneSQL, []any{100, 150, 1, 0}},
	}
}
