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

// StmtCacheSize is how many statements a SQLite connection keeps prepared.
const StmtCacheSize = stmtCacheSize

// CachedStatements is the SQL of the statements conn keeps prepared, most recently used
// first (conn must be a SQLite connection of Open's).
func CachedStatements(conn *sql.Conn) ([]string, error) {
	var out []string
	err := conn.Raw(func(dc any) error {
		for e := dc.(*cachingConn).lru.Front(); e != nil; e = e.Next() {
			out = append(out, e.Value.(*cachedStmt).query)
		}
		return nil
	})
	return out, err
}
