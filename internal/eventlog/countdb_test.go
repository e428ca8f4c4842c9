package eventlog_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lib/pq"
	"modernc.org/sqlite"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// countingDB is a database that counts the statements it runs, on the engine's own
// driver, so a test can tell how many queries a code path makes (Count).
type countingDB struct {
	*sqlutil.DB
	stmts *statements
}

// Count is how many statements that begin with verb ("SELECT") and mention table ran.
func (c *countingDB) Count(verb, table string) int {
	return c.stmts.count(verb, table)
}

// withCountingDatabases runs fn as the subtests "sqlite" and "postgres", each on a fresh,
// empty database whose statements are counted.
func withCountingDatabases(t *testing.T, fn func(t *testing.T, db *countingDB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		fn(t, openCounting(t, sqlutil.SQLite, &sqlite.Driver{}, sqliteDSN(t)))
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, openCounting(t, sqlutil.Postgres, pq.Driver{}, test.PostgresDSN(t)))
	})
}

// benchCountingDatabases is withCountingDatabases for a benchmark.
func benchCountingDatabases(b *testing.B, fn func(b *testing.B, db *countingDB)) {
	b.Run("sqlite", func(b *testing.B) {
		fn(b, openCounting(b, sqlutil.SQLite, &sqlite.Driver{}, sqliteDSN(b)))
	})
	b.Run("postgres", func(b *testing.B) {
		fn(b, openCounting(b, sqlutil.Postgres, pq.Driver{}, test.PostgresDSN(b)))
	})
}

// sqliteDSN is a fresh SQLite file with the settings sqlutil.Open gives one.
func sqliteDSN(tb testing.TB) string {
	return "file:" + filepath.Join(tb.TempDir(), "test.db") +
		"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

func openCounting(tb testing.TB, engine sqlutil.Engine, d driver.Driver, dsn string) *countingDB {
	s := &statements{seen: map[string]int{}}
	db := &countingDB{DB: &sqlutil.DB{DB: sql.OpenDB(&countingConnector{d: d, dsn: dsn, stmts: s}), Dialect: sqlutil.Dialect{Engine: engine}}, stmts: s}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	tb.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
	return db
}

// statements counts the statements run, by their text.
type statements struct {
	mu   sync.Mutex
	seen map[string]int
}

func (s *statements) add(query string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[query]++
}

func (s *statements) count(verb, table string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for q, c := range s.seen {
		if strings.HasPrefix(strings.TrimSpace(q), verb) && strings.Contains(q, table) {
			n += c
		}
	}
	return n
}

// countingConnector opens d's connections, which count what they run.
type countingConnector struct {
	d     driver.Driver
	dsn   string
	stmts *statements
}

func (c *countingConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, stmts: c.stmts}, nil
}

func (c *countingConnector) Driver() driver.Driver { return c.d }

// countingConn is a driver connection that counts the statements run through it. Both
// drivers implement the context interfaces it passes on to.
type countingConn struct {
	driver.Conn
	stmts *statements
}

func (c *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.stmts.add(query)
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (c *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.stmts.add(query)
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c *countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.stmts.add(query)
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *countingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *countingConn) CheckNamedValue(v *driver.NamedValue) error {
	if n, ok := c.Conn.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(v)
	}
	return driver.ErrSkip
}
