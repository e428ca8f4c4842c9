package sqlutil

import (
	"container/list"
	"context"
	"database/sql/driver"
	"fmt"
)

// stmtCacheSize bounds the statements each SQLite connection keeps prepared: a monolith
// has about 70 SQLite connections, and 64 statements each took some 20 MiB (soak.sh), 16
// some 5 more than 8 (docs/benchmarks.md).
const stmtCacheSize = 8

// stmtCacheConnector opens SQLite connections that keep their statements prepared. The
// modernc driver parses and compiles a statement's SQL on every Exec and Query that is not
// run through a prepared statement, and the code here passes SQL text to ExecContext and
// QueryContext: that compilation was 10-18% of the monolith's CPU in profiles
// (docs/benchmarks.md). A statement prepared once per connection is reset and run again.
type stmtCacheConnector struct {
	driver.Connector
}

// sqliteConn is what database/sql uses of a modernc connection; cachingConn passes on all
// of it.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// sqliteStmt is a modernc prepared statement.
type sqliteStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

// sqliteRows is a modernc result set with the column type information it offers.
type sqliteRows interface {
	driver.Rows
	driver.RowsColumnTypeDatabaseTypeName
	driver.RowsColumnTypeLength
	driver.RowsColumnTypeNullable
	driver.RowsColumnTypePrecisionScale
	driver.RowsColumnTypeScanType
}

func (c stmtCacheConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(sqliteConn)
	if !ok {
		_ = conn.Close() // unusable either way
		return nil, fmt.Errorf("sqlite driver connection %T lacks the interfaces the statement cache needs", conn)
	}
	return &cachingConn{sqliteConn: sc, stmts: map[string]*list.Element{}, lru: list.New()}, nil
}

// cachingConn is a SQLite connection with its statements prepared, the most recently used
// stmtCacheSize of them. database/sql uses a connection from one goroutine at a time (and
// closes a result set under the connection's lock), so it needs no lock of its own.
type cachingConn struct {
	sqliteConn
	stmts map[string]*list.Element // of *cachedStmt, by SQL text
	lru   *list.List               // most recently used first
}

// cachedStmt is a prepared statement. While a result set of it is open it is busy: a
// second query of the same SQL on the connection (a nested loop) runs unprepared, as it
// would have without the cache. A busy statement that falls out of the cache is closed
// when its result set is.
type cachedStmt struct {
	query   string
	stmt    sqliteStmt
	busy    bool
	evicted bool
}

// get returns query's prepared statement, preparing it on a miss.
func (c *cachingConn) get(ctx context.Context, query string) (*cachedStmt, error) {
	if e, ok := c.stmts[query]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cachedStmt), nil
	}
	st, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	ss, ok := st.(sqliteStmt)
	if !ok {
		_ = st.Close() // unusable either way
		return nil, fmt.Errorf("sqlite driver statement %T lacks the interfaces the statement cache needs", st)
	}
	s := &cachedStmt{query: query, stmt: ss}
	c.stmts[query] = c.lru.PushFront(s)
	for c.lru.Len() > stmtCacheSize {
		old := c.lru.Remove(c.lru.Back()).(*cachedStmt)
		delete(c.stmts, old.query)
		if old.busy {
			old.evicted = true
			continue
		}
		_ = old.stmt.Close() // finalizing a reset statement frees memory; it has nothing to report
	}
	return s, nil
}

// ExecContext implements driver.ExecerContext with the prepared statement.
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.get(ctx, query)
	if err != nil {
		return nil, err
	}
	if s.busy {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	return s.stmt.ExecContext(ctx, args)
}

// QueryContext implements driver.QueryerContext with the prepared statement.
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, err := c.get(ctx, query)
	if err != nil {
		return nil, err
	}
	if s.busy {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := s.stmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	sr, ok := rows.(sqliteRows)
	if !ok {
		_ = rows.Close() // unusable either way
		return nil, fmt.Errorf("sqlite driver rows %T lack the interfaces the statement cache needs", rows)
	}
	s.busy = true
	return &cachedRows{sqliteRows: sr, s: s}, nil
}

// Close finalizes the prepared statements and closes the connection.
func (c *cachingConn) Close() error {
	for e := c.lru.Front(); e != nil; e = e.Next() {
		_ = e.Value.(*cachedStmt).stmt.Close() // the connection's close below reports what matters
	}
	c.stmts, c.lru = nil, nil
	return c.sqliteConn.Close()
}

// cachedRows is a result set of a cached statement, which is free again once it is closed.
type cachedRows struct {
	sqliteRows
	s *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.sqliteRows.Close()
	r.s.busy = false
	if r.s.evicted {
		_ = r.s.stmt.Close() // out of the cache: nothing uses it any more
	}
	return err
}
