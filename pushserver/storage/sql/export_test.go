package sql

import "github.com/matrix-org/dendrite/internal/sqlutil"

// MigrationsUpTo are the schema's migrations up to version v, to build a database as an
// earlier release left it.
func MigrationsUpTo(v int) []sqlutil.Migration {
	return migrations[:v]
}
