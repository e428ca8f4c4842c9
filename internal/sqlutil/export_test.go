package sqlutil

import "database/sql"

// OpenPostgresUnchecked opens a PostgreSQL pool as Open does, without connecting first.
func OpenPostgresUnchecked(dsn string) (*sql.DB, error) {
	c, err := newPQConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(c), nil
}
