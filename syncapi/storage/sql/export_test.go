package sql

import (
	"context"
	"testing"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// OpenForTest opens the sync API's database on db, failing t on an error. The tests of
// package sql_test use it too.
func OpenForTest(t testing.TB, db *sqlutil.DB) *Database {
	t.Helper()
	ctx := context.Background()
	offsets, err := eventlog.NewOffsetStore(ctx, db, "syncapi")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(ctx, db, offsets)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
