// Package sqlutil opens SQLite and PostgreSQL databases behind one type and hides the few
// differences between the engines (list parameters, auto-increment keys, column types,
// write serialisation) so that every table's SQL is written once.
package sqlutil

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lib/pq"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/matrix-org/dendrite/internal/privfs"
)

// Engine is a database engine.
type Engine int

const (
	// SQLite is modernc.org/sqlite, pure Go.
	SQLite Engine = iota
	// Postgres is PostgreSQL through lib/pq.
	Postgres
)

// DB is an open database with its engine's dialect. On SQLite, writes are serialised by
// WithTx: SQLite has one writer at a time, and waiting on our own lock is cheaper and
// fairer than retrying on SQLITE_BUSY.
type DB struct {
	*sql.DB
	Dialect Dialect
	writeMu sync.Mutex
}

// Querier is what *sql.DB and *sql.Tx have in common.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Conn returns tx when it is set, else the database.
func Conn(db *DB, tx *sql.Tx) Querier {
	if tx != nil {
		return tx
	}
	return db.DB
}

// Open opens a database: "postgres://..." or "postgresql://..." is PostgreSQL; "file:PATH",
// "sqlite:PATH" or a plain path is SQLite in WAL mode. A SQLite file is created 0600 (its
// directory 0700) before SQLite opens it, so its -wal and -shm files, which SQLite creates
// with the database's mode, are 0600 too; Open refuses a group- or world-writable
// directory (privfs.MkdirAll).
func Open(dsn string) (*DB, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		// Cancellation gives up a connection being opened but lets a statement already
		// sent run to its end (pqconn.go).
		connector, err := newPQConnector(withBinaryParameters(dsn))
		if err != nil {
			return nil, err
		}
		db := sql.OpenDB(connector)
		// Keep as many idle connections as may be open: a PostgreSQL connection is a forked
		// backend that warms its caches on first use, so closing the ones over a smaller
		// idle limit after every burst (20 long-polling /sync requests, say) and opening them
		// again costs more CPU than the queries. Connections idle for a minute are closed.
		db.SetMaxOpenConns(40)
		db.SetMaxIdleConns(40)
		db.SetConnMaxIdleTime(time.Minute)
		if err = db.Ping(); err != nil {
			_ = db.Close() // the ping error is the one to report
			return nil, fmt.Errorf("connect to postgres: %w", err)
		}
		return &DB{DB: db, Dialect: Dialect{Engine: Postgres}}, nil
	}
	path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if err := privfs.PrepareFile(path); err != nil {
		return nil, err
	}
	if err := privfs.Restrict(path+"-wal", path+"-shm"); err != nil {
		return nil, err
	}
	// cache_size(-2000) is SQLite's own default, 2 MB of pages per connection: with eight
	// connections to each of a monolith's ten databases, 16 MB each (what this was) let the
	// page caches alone outgrow the Go heap (docs/benchmarks.md, soak); the file's pages stay
	// in the kernel's page cache either way. All connections together are held under
	// SetSQLiteMemoryLimit's limit (sqlitemem.go).
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(NORMAL)", "foreign_keys(ON)", "cache_size(-2000)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	connector, err := sqlite.NewConnector("file:" + path + "?" + q.Encode())
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(stmtCacheConnector{connector})
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	if err = db.Ping(); err != nil {
		_ = db.Close() // the ping error is the one to report
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return &DB{DB: db, Dialect: Dialect{Engine: SQLite}}, nil
}

// Engine is the database's engine.
func (db *DB) Engine() Engine {
	return db.Dialect.Engine
}

// withBinaryParameters turns on lib/pq's binary_parameters unless the DSN sets it: a query
// with parameters is then one round trip (Parse, Bind, Execute in one message) instead of
// two (Parse and Describe first, to learn the parameter types), and []byte parameters go
// as binary, not hex text.
func withBinaryParameters(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn // sql.Open reports it
	}
	q := u.Query()
	if q.Has("binary_parameters") {
		return dsn
	}
	q.Set("binary_parameters", "yes")
	u.RawQuery = q.Encode()
	return u.String()
}

// WithTx runs fn in a transaction: committed if fn returns nil, rolled back otherwise.
func (db *DB) WithTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if db.Dialect.Engine == SQLite {
		db.writeMu.Lock()
		defer db.writeMu.Unlock()
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err = fn(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return fmt.Errorf("%w (rollback failed too: %v)", err, rerr)
		}
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique-constraint failure on either engine.
func IsUniqueViolation(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Code == "23505"
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		return liteErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || liteErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// IsUnavailable reports whether err says the database could not serve a statement at the
// time (it is unreachable, shutting down, out of connections, memory or disk, failing its
// I/O, locked by another writer, or it aborted the transaction in a conflict) rather than
// refused the statement for what it held: the same statement may succeed later. Errors
// that end a PostgreSQL session (severity FATAL or PANIC, including every error met while
// connecting) count, and so do the classes 08 (connection), 40 (transaction rollback), 53
// (insufficient resources), 57 (operator intervention) and 58 (system error); on SQLite,
// BUSY, LOCKED, IOERR, FULL, NOMEM, CANTOPEN, READONLY, PROTOCOL and INTERRUPT; and the
// network and connection errors of either driver.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code.Class() {
		case "08", "40", "53", "57", "58":
			return true
		}
		return pqErr.Fatal() || pqErr.Severity == "PANIC"
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_NOMEM,
			sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_INTERRUPT:
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// Column reads every row of a one-column result into a slice and closes rows.
func Column[T any](rows *sql.Rows) ([]T, error) {
	defer rows.Close() // nolint: errcheck // the scan or iteration error is what matters
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
