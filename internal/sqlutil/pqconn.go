package sqlutil

import (
	"context"
	"database/sql/driver"
	"fmt"
	"net"
	"time"

	"github.com/lib/pq"
)

// lib/pq handles a cancelled context in two costly ways. It opens a connection without
// watching the context after the TCP connect, so a caller waits for the server's answer to
// the startup however long that takes. And it aborts a statement whose context is
// cancelled by opening another connection to the server to send it a cancel request,
// waiting until the server closes that one, and discarding the statement's own connection:
// each cancelled statement costs the server a new backend process and the pool a
// connection. On SIGTERM every component's context is cancelled at once: a monolith that
// had just started (every consumer partition loading its position, some two hundred
// statements and connection startups in flight) sent a burst of cancel requests that kept
// a loaded server from answering the startups for over 20 s, and the process did not exit
// (TestMonolithStopsOnPostgres).
//
// The connections Open makes therefore treat cancellation as callers expect: a connection
// being opened is given up (its socket closed) when the context ends, and a statement
// already sent runs to its end (statements are short) with its connection going back to
// the pool, instead of a cancel request. Cancellation still acts everywhere else:
// database/sql stops waiting for a connection, closes the rows and rolls back the
// transaction (with a ROLLBACK on the same connection), and the caller stops before its
// next statement. A context's deadline still reaches lib/pq, so a statement that overruns
// its deadline is still aborted.

// pqConnector opens lib/pq connections that treat cancellation as above.
type pqConnector struct {
	*pq.Connector
}

// newPQConnector is a connector for dsn whose connections treat cancellation as above.
func newPQConnector(dsn string) (pqConnector, error) {
	c, err := pq.NewConnector(dsn)
	if err != nil {
		return pqConnector{}, err
	}
	c.Dialer(startupDialer{})
	return pqConnector{c}, nil
}

// startupKey marks the context of a connection being opened (a *startup).
type startupKey struct{}

// startup is a connection being opened: stop ends its watch of ctx.
type startup struct {
	ctx  context.Context
	stop func() bool
}

// startupDialer is lib/pq's default dialer, except that the socket of a connection being
// opened is closed when the opening's context ends, which fails lib/pq's startup at once.
type startupDialer struct{}

// Dial implements pq.Dialer.
func (d startupDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialTimeout implements pq.Dialer.
func (d startupDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// DialContext implements pq.DialerContext. lib/pq passes it the context given to Connect,
// or one derived from it (connect_timeout), and for a cancel request one of its own.
func (d startupDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if s, ok := ctx.Value(startupKey{}).(*startup); ok {
		s.stop = context.AfterFunc(s.ctx, func() { _ = c.Close() }) // the startup then fails
	}
	return c, nil
}

// Connect implements driver.Connector: it gives up when ctx ends, even during lib/pq's
// startup.
func (c pqConnector) Connect(ctx context.Context) (driver.Conn, error) {
	s := &startup{ctx: ctx}
	cn, err := c.Connector.Connect(context.WithValue(ctx, startupKey{}, s))
	if s.stop != nil && !s.stop() && err == nil {
		// ctx ended as the startup succeeded: the socket is closed or being closed.
		_ = cn.Close() // the connection is unusable either way
		return nil, ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	pc, ok := cn.(pqDriverConn)
	if !ok {
		_ = cn.Close() // unusable either way
		return nil, fmt.Errorf("lib/pq connection %T lacks a database/sql interface", cn)
	}
	return pqConn{pc}, nil
}

// pqDriverConn is what a lib/pq connection implements.
type pqDriverConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.QueryerContext
	driver.ExecerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
	driver.NamedValueChecker
}

// pqDriverStmt is what a lib/pq prepared statement implements.
type pqDriverStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

// pqConn is a lib/pq connection whose statements see no cancellation.
type pqConn struct {
	pqDriverConn
}

// uncancelled is ctx with its values and its deadline but without its cancellation.
func uncancelled(ctx context.Context) context.Context {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithoutCancel(ctx)
	}
	// The context ends at the deadline, when its timer releases it; ending it any earlier
	// would be the cancellation this hides. lib/pq stops watching it when the statement
	// (or, for BeginTx, the transaction) ends.
	dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	_ = cancel // nolint: lostcancel // see above: only the deadline may end it
	return dctx
}

// BeginTx implements driver.ConnBeginTx.
func (c pqConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.pqDriverConn.BeginTx(uncancelled(ctx), opts)
}

// Prepare implements driver.Conn.
func (c pqConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext implements driver.ConnPrepareContext.
func (c pqConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.pqDriverConn.PrepareContext(uncancelled(ctx), query)
	if err != nil {
		return nil, err
	}
	ps, ok := st.(pqDriverStmt)
	if !ok {
		_ = st.Close() // unusable either way
		return nil, fmt.Errorf("lib/pq statement %T lacks a database/sql interface", st)
	}
	return pqStmt{ps}, nil
}

// QueryContext implements driver.QueryerContext.
func (c pqConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.pqDriverConn.QueryContext(uncancelled(ctx), query, args)
}

// ExecContext implements driver.ExecerContext.
func (c pqConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.pqDriverConn.ExecContext(uncancelled(ctx), query, args)
}

// Ping implements driver.Pinger.
func (c pqConn) Ping(ctx context.Context) error {
	return c.pqDriverConn.Ping(uncancelled(ctx))
}

// pqStmt is a lib/pq prepared statement that sees no cancellation.
type pqStmt struct {
	pqDriverStmt
}

// ExecContext implements driver.StmtExecContext.
func (s pqStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.pqDriverStmt.ExecContext(uncancelled(ctx), args)
}

// QueryContext implements driver.StmtQueryContext.
func (s pqStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.pqDriverStmt.QueryContext(uncancelled(ctx), args)
}
